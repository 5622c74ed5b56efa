/* SPDX-License-Identifier: GPL-3.0-or-later */
/* libnn: the nnrun core library (umbrella header). */
#ifndef NN_NN_H
#define NN_NN_H

#include <nn/config.h>
#include <nn/data.h>
#include <nn/dist.h>
#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plot.h>
#include <nn/registry.h>
#include <nn/safetensors.h>
#include <nn/schedule.h>
#include <nn/sequential.h>
#include <nn/train.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "NN_EABI"-style name and one-line description of an error code. */
const char *nn_err_name(int code);
const char *nn_strerror(int code);
/* Package version, e.g. "0.1.0". */
const char *nn_version_string(void);
/* The CBLAS GSL's products run on, as linked: "OpenBLAS" or "gslcblas". */
const char *nn_cblas_name(void);

#ifdef __cplusplus
}
#endif
#endif /* NN_NN_H */
