/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared by the fuzz targets (fuzz/TARGET.c, built by `make fuzz`): the
 * parsers under test take file names, so each input is written to a file
 * in a private temporary directory first.
 *
 * The directory is made on first use and removed at exit, with the files
 * the targets wrote into it.  Paths returned here are owned by this
 * module and stay valid until exit. */
#ifndef NN_FUZZ_H
#define NN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The path of `name` (a plain file name) in the temporary directory.
 * Exits the process when the directory cannot be made: without it no
 * input can be run, and a fuzz run should stop loudly. */
const char *fuzz_path(const char *name);

/* Replace file `name` with data[0..size); with gzip set, the file holds
 * the data gzip-compressed.  Returns its path.  Exits on a write failure
 * (a full /tmp is no finding of the parser). */
const char *fuzz_write(const char *name, const uint8_t *data, size_t size,
                       int gzip);

/* Remove file `name` from the temporary directory, if it is there. */
void fuzz_remove(const char *name);

/* Split an input in two: the first two bytes (big-endian) give the length
 * of the first part, clamped to what follows them; the second part is the
 * rest.  Inputs shorter than two bytes give two empty parts.  This lets
 * one input carry two files (IDX images and labels, or two checkpoints)
 * while the fuzzer mutates both. */
void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a,
                size_t *a_len, const uint8_t **b, size_t *b_len);

#endif
