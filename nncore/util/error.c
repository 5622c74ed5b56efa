/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Error names and texts, generated from the one NN_ERRNO_MAP in
 * <nn/plugin.h>, plus the library's version facts. */
#include <config.h>

#include <nn/nn.h>

const char *nn_err_name(int code) {
  switch (code) {
#define NN_ERR_NAME_(name, value, text) \
  case value:                           \
    return #name;
    NN_ERRNO_MAP(NN_ERR_NAME_)
#undef NN_ERR_NAME_
  }
  return "NN_E?";
}

const char *nn_strerror(int code) {
  switch (code) {
#define NN_ERR_TEXT_(name, value, text) \
  case value:                           \
    return text;
    NN_ERRNO_MAP(NN_ERR_TEXT_)
#undef NN_ERR_TEXT_
  }
  return "unknown error";
}

const char *nn_version_string(void) { return PACKAGE_VERSION; }

const char *nn_cblas_name(void) { return NN_CBLAS_NAME; }
