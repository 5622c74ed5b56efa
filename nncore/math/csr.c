/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Sparse batches (nn_csr_buffer, see <nn/math.h>): allocation, conversion
 * from a dense matrix, transposition and validation. */
#include <config.h>

#include "math/simd.h"

void nn_csr_buffer_free(nn_csr_buffer *b) {
  if (!b)
    return;
  free(b->start);
  free(b->index);
  free(b->value);
  memset(b, 0, sizeof *b);
}

int nn_csr_buffer_init(nn_csr_buffer *b, size_t max_rows, size_t max_nnz) {
  if (!b)
    return NN_EINVAL;
  memset(b, 0, sizeof *b);
  if (max_rows >= SIZE_MAX / sizeof(size_t) ||
      max_nnz > SIZE_MAX / sizeof(double) || max_nnz > UINT32_MAX)
    return NN_EINVAL;
  b->start = malloc((max_rows + 1) * sizeof *b->start);
  /* At least one element, so that an empty buffer still has valid
   * pointers to hand out. */
  b->index = malloc((max_nnz ? max_nnz : 1) * sizeof *b->index);
  b->value = malloc((max_nnz ? max_nnz : 1) * sizeof *b->value);
  if (!b->start || !b->index || !b->value) {
    nn_csr_buffer_free(b);
    return NN_ENOMEM;
  }
  b->max_rows = max_rows;
  b->max_nnz = max_nnz;
  b->start[0] = 0;
  b->csr = (nn_csr){(uint32_t)sizeof(nn_csr), 0, 0, b->start, b->index, b->value};
  return NN_OK;
}

int nn_csr_from_dense(nn_csr_buffer *b, const gsl_matrix *X) {
  if (!b || !X || X->size1 > b->max_rows || X->size2 > UINT32_MAX)
    return NN_EINVAL;
  size_t nnz = 0;
  for (size_t i = 0; i < X->size1; i++) {
    const double *r = row_cptr(X, i);
    for (size_t j = 0; j < X->size2; j++) {
      if (r[j] == 0.0)
        continue;
      if (nnz == b->max_nnz)
        return NN_EINVAL;
      b->index[nnz] = (uint32_t)j;
      b->value[nnz++] = r[j];
    }
    b->start[i + 1] = nnz;
  }
  b->csr = (nn_csr){(uint32_t)sizeof(nn_csr), X->size1, X->size2, b->start, b->index, b->value};
  return NN_OK;
}

int nn_csr_transpose(nn_csr_buffer *b, const nn_csr *A) {
  if (!b || !A || !A->start || A->cols > b->max_rows ||
      A->rows > UINT32_MAX || A->start[A->rows] > b->max_nnz)
    return NN_EINVAL;
  const size_t rows = A->rows, cols = A->cols;
  size_t *start = b->start;
  /* Counting sort by column: count, prefix-sum into start[c + 1], then
   * place.  Walking A's rows in order leaves every row of the transpose in
   * ascending order. */
  memset(start, 0, (cols + 1) * sizeof *start);
  const size_t nnz = A->start[rows];
  for (size_t p = 0; p < nnz; p++)
    start[A->index[p] + 1]++;
  for (size_t c = 0; c < cols; c++)
    start[c + 1] += start[c];
  /* Write the destination in order first: the placement below scatters
   * over one stream per column, which the CPU cannot foresee, and on the
   * trainer's helper thread every first write to a line of a slot the
   * other core has just read waits for that core to give it up. */
  memset(b->index, 0, nnz * sizeof *b->index);
  memset(b->value, 0, nnz * sizeof *b->value);
  /* start[c] is now the next free slot of column c; placing shifts it to
   * the column's end, which is start[c + 1] before placing: shift back. */
  for (size_t i = 0; i < rows; i++)
    for (size_t p = A->start[i]; p < A->start[i + 1]; p++) {
      const size_t q = start[A->index[p]]++;
      b->index[q] = (uint32_t)i;
      b->value[q] = A->value[p];
    }
  memmove(start + 1, start, cols * sizeof *start);
  start[0] = 0;
  b->csr = (nn_csr){(uint32_t)sizeof(nn_csr), cols, rows, b->start, b->index, b->value};
  return NN_OK;
}

int nn_csr_valid(const nn_csr *A) {
  if (!A || !A->start || (A->rows && (!A->index || !A->value)) ||
      A->start[0] != 0)
    return 0;
  for (size_t i = 0; i < A->rows; i++) {
    if (A->start[i + 1] < A->start[i])
      return 0;
    for (size_t p = A->start[i]; p < A->start[i + 1]; p++)
      if (A->index[p] >= A->cols ||
          (p > A->start[i] && A->index[p] <= A->index[p - 1]))
        return 0;
  }
  return 1;
}

nn_csr nn_csr_rows(const nn_csr *A, size_t r0, size_t r1) {
  return (nn_csr){(uint32_t)sizeof(nn_csr), r1 - r0, A->cols, A->start + r0, A->index, A->value};
}
