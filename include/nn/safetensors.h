/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Checkpoints in the safetensors format: save model parameters, read them
 * back, and read files written by other safetensors writers.
 *
 * Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * (possibly padded with trailing spaces), then the data section.  Each JSON
 * key other than "__metadata__" names a tensor:
 *   {"dtype": "F64", "shape": [rows, cols], "data_offsets": [begin, end]}
 * with offsets relative to the data section; data is little-endian and
 * row-major.  "__metadata__" maps string keys to string values.
 *
 * Byte order: all conversion is explicit (bytes are assembled with shifts),
 * so the code is correct on big-endian hosts too; it assumes only that
 * doubles and floats are IEEE-754 binary64/binary32 stored with the same
 * byte order as same-sized integers (true on every current platform;
 * checked at compile time where possible).
 *
 * Errors (returned and written into the caller-owned nn_error; the message
 * always names the file, and the tensor where one is involved):
 *   NN_EIO      the file cannot be opened, read or written;
 *   NN_EFORMAT  the file is not a well-formed safetensors file;
 *   NN_EINVAL   bad arguments, or the file is well-formed but does not
 *               match what the caller expects (names, shapes);
 *   NN_ENOMEM   out of memory. */
#ifndef NN_SAFETENSORS_H
#define NN_SAFETENSORS_H

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types this library writes and reads ("F64", "F32" in files). */
#define NN_DTYPE_F64 1u
#define NN_DTYPE_F32 2u

/* Write every params[i].value under params[i].name with shape [rows, cols]
 * as `dtype` (NN_DTYPE_F64: bit-exact; NN_DTYPE_F32: each double cast to
 * float, which rounds to nearest and gives +-inf beyond FLT_MAX).  Tensors
 * are stored in the order given, back to back; the header is padded with
 * spaces so the data section starts at a multiple of 8 bytes.
 *
 * `metadata` is NULL or a NULL-terminated array of alternating key, value
 * strings, stored as "__metadata__" (keys must be unique; a key whose value
 * is the terminating NULL is an error).  Names and metadata must be valid
 * UTF-8; names must be unique and not "__metadata__".  Everything is lent
 * for the call only.
 *
 * The file is replaced atomically (temp file, fsync, rename): after a
 * failure or crash `path` holds its old contents or nothing. */
int nn_safetensors_save(const char *path, const nn_param *params, size_t n,
                        uint32_t dtype, const char *const *metadata,
                        nn_error *err);

/* An opened, fully validated safetensors file (opaque).  It holds the whole
 * file in memory (checkpoints are small) and owns every string it hands
 * out; those stay valid until nn_safetensors_close. */
typedef struct nn_safetensors nn_safetensors;

/* Read and validate `path`.  On success *out is a new handle owned by the
 * caller (release with nn_safetensors_close); on error *out is NULL
 * (NN_ENOTFOUND: no such file; NN_EIO: it cannot be read).
 * Validation: header length within the file, JSON syntax (jansson's message
 * with header line/column), duplicate keys, every entry an object with
 * "dtype" ("F64" or "F32"; anything else, e.g. "BF16", is refused as an
 * unsupported dtype), "shape" (array of non-negative integers) and
 * "data_offsets" (two integers, begin <= end, within the data section),
 * byte count == product(shape) * element size, tensors tiling the data
 * section exactly (no overlaps, gaps or trailing bytes), and "__metadata__"
 * an object of strings.  Other keys inside an entry are ignored. */
int nn_safetensors_open(nn_safetensors **out, const char *path,
                        nn_error *err);
void nn_safetensors_close(nn_safetensors *f); /* NULL-safe */

/* Number of tensors (not counting "__metadata__"). */
size_t nn_safetensors_count(const nn_safetensors *f);
/* Name of tensor i (0 <= i < count), in header order; NULL if out of
 * range.  Owned by f. */
const char *nn_safetensors_name(const nn_safetensors *f, size_t i);
/* Shape of a tensor as a matrix: [r, c] -> r x c, [k] -> 1 x k.  Returns
 * NN_OK, or NN_EINVAL (outputs untouched) if there is no such tensor or it
 * is 0-D or has more than 2 dimensions.  rows/cols may be NULL. */
int nn_safetensors_shape(const nn_safetensors *f, const char *name,
                         size_t *rows, size_t *cols);
/* NN_DTYPE_F64 or NN_DTYPE_F32; 0 if there is no such tensor. */
uint32_t nn_safetensors_dtype(const nn_safetensors *f, const char *name);
/* Metadata value for `key`, or NULL if absent.  Owned by f. */
const char *nn_safetensors_meta(const nn_safetensors *f, const char *key);

/* Copy tensor `name` into dst (F32 widened to double).  The tensor's shape
 * as reported by nn_safetensors_shape must equal dst's exactly, else
 * NN_EINVAL naming the tensor and both shapes (also NN_EINVAL for a missing
 * tensor).  dst may be a view (tda != size2); it is untouched on error. */
int nn_safetensors_read(const nn_safetensors *f, const char *name,
                        gsl_matrix *dst, nn_error *err);

/* Load the params' values from an open file: each param's name must be a
 * tensor of its shape, and every other tensor of the file must be named in
 * `ignore` (NULL-terminated; NULL for none), else NN_EINVAL naming it.
 * Everything is validated before anything is copied, so on any error every
 * params[i].value is left unchanged. */
int nn_safetensors_read_params(const nn_safetensors *f, nn_param *params,
                               size_t n, const char *const *ignore,
                               nn_error *err);

/* Open `path` and load it into params: the file must hold exactly the
 * params' names (a missing name is an error listing the file's tensors, an
 * extra tensor is an error naming it) with matching shapes.  Everything is
 * validated before anything is copied, so on any error every params[i].value
 * is left unchanged.  Only .name and .value are used; grads are untouched. */
int nn_safetensors_load_params(const char *path, nn_param *params, size_t n,
                               nn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NN_SAFETENSORS_H */
