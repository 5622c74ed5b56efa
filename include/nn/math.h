/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared numerics of nnrun (the course's `_base_network`), written once in
 * libnn and used by the core and by plugins.
 *
 * All functions take caller-owned matrices (views are fine), never allocate,
 * and return NN_OK or NN_EINVAL on a shape mismatch / bad label.  Unless a
 * comment says otherwise, `out` may alias the input. */
#ifndef NN_MATH_H
#define NN_MATH_H

#include <nn/plugin_ext.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out = 1 / (1 + exp(-x)), element-wise. */
int nn_sigmoid(const gsl_matrix *x, gsl_matrix *out);
/* out = sigmoid(x) * (1 - sigmoid(x)), element-wise (derivative at x). */
int nn_sigmoid_deriv(const gsl_matrix *x, gsl_matrix *out);
/* out = max(x, 0), element-wise. */
int nn_relu(const gsl_matrix *x, gsl_matrix *out);
/* out = 1 where x > 0, else 0 (the derivative at x; 0 at x == 0). */
int nn_relu_deriv(const gsl_matrix *x, gsl_matrix *out);
/* Row-wise softmax, shifted by each row's maximum so exp never overflows. */
int nn_softmax_rows(const gsl_matrix *x, gsl_matrix *out);
/* *loss = mean over rows of -log(probs[i, labels[i]]). Probabilities are
 * clamped away from 0 so a hard zero gives a large finite loss. */
int nn_cross_entropy(const gsl_matrix *probs, const uint32_t *labels,
                     double *loss);
/* Number of rows whose argmax (first maximum) equals the label. */
size_t nn_count_hits(const gsl_matrix *scores, const uint32_t *labels);
/* nn_count_hits / rows (0 for an empty matrix). */
double nn_accuracy(const gsl_matrix *scores, const uint32_t *labels);

/* Fused softmax + mean cross-entropy (+ score gradient) for one batch:
 *   *loss = mean CE of softmax(scores), *hits = argmax matches;
 *   if dscores != NULL: dscores = (softmax(scores) - onehot(labels)) / B.
 * dscores may alias scores.  One pass over the batch. */
int nn_softmax_xent(const gsl_matrix *scores, const uint32_t *labels,
                    gsl_matrix *dscores, double *loss, size_t *hits);

/* Backward through a sigmoid layer given its output h, in one pass:
 * d = d * h * (1 - h) (the derivative from the stored activation, no exp)
 * and colsum[0, j] = sum over rows of the new d (the bias gradient).
 * colsum is 1 x cols and must not overlap d or h. */
int nn_sigmoid_backward(gsl_matrix *d, const gsl_matrix *h,
                        gsl_matrix *colsum);

/* m[i, :] += b[0, :] for every row (b is 1 x cols). */
int nn_add_row_vector(gsl_matrix *m, const gsl_matrix *b);
/* out[0, j] = sum_i m[i, j] (out is 1 x cols). */
int nn_column_sums(const gsl_matrix *m, gsl_matrix *out);
/* A rows x cols matrix of zeros whose data starts on a 64-byte boundary
 * (a cache line), released with gsl_matrix_free like any other.
 * gsl_matrix_alloc's data starts 16 bytes into a line, so with 8-double
 * (64-byte) vectors every load of a row of W1 straddled two lines: the
 * two-layer model's sparse products took 35 % longer.  NULL when out of
 * memory or too large, without going through GSL's error handler (which
 * aborts unless the program turned it off), so libnn and plugins allocate
 * their matrices with it. */
gsl_matrix *nn_matrix_calloc_aligned(size_t rows, size_t cols);
/* The same with rows tda doubles apart (tda >= cols; NULL otherwise).
 * Padding a row by a cache line keeps the rows of a wide matrix off a
 * power-of-two stride: at 1024 doubles (8 KB) the rows of a band of
 * columns all map to the same few L1 sets and evict each other (the
 * two-layer model's banded products took 1.5x as long). */
gsl_matrix *nn_matrix_calloc_strided(size_t rows, size_t cols, size_t tda);

/* Fill m with scale * N(0, 1) draws from rng, row by row. */
void nn_fill_gaussian(gsl_matrix *m, gsl_rng *rng, double scale);

/* The shape check every model plugin makes on forward / backward: X is
 * rows x cols with cols == n_in and 1 <= rows <= max_batch, and s (the
 * scores or dscores, named `what` in the message) is rows x n_out.
 * Returns NN_OK, or NN_EINVAL with "<model>: ..." in err. */
int nn_check_batch(const char *model, size_t rows, size_t cols, size_t n_in,
                   size_t max_batch, const gsl_matrix *s, size_t n_out,
                   const char *what, nn_error *err);

/* L2 regularization, the course's rule: grad += reg * value for every
 * NN_PARAM_WEIGHT parameter; biases are never touched. */
int nn_apply_l2(nn_param *params, size_t n, double reg);

/* One SGD step on one parameter, in one pass over it:
 *   g' = g + reg * w                  (reg == 0: g' = g, no 0 * w term)
 *   v == NULL:  w -= lr * g'
 *   otherwise:  v = momentum * v + g';  w -= lr * v
 * g is not modified.  Multiplies and adds are rounded separately, like the
 * plain C expressions, so the result is the same on every CPU.  Pass
 * reg = 0 for biases (the course's L2 touches weights only). */
int nn_sgd_update(gsl_matrix *w, const gsl_matrix *g, gsl_matrix *v,
                  double lr, double reg, double momentum);

/* ---- Sparse batches: compressed sparse rows (nn_csr, <nn/plugin.h>). ----
 * What a model needs to run its first layer on a sparse batch: scratch
 * buffers (allocate in create, refill per batch), a transpose for the
 * weight gradient (X^T dZ is transpose(X) times dZ), and the product. */

/* A CSR matrix with owned storage for at most max_rows rows and max_nnz
 * stored entries; `csr` is the view of its current contents. */
typedef struct nn_csr_buffer {
  nn_csr csr;
  size_t max_rows, max_nnz;
  size_t *start;   /* max_rows + 1 */
  uint32_t *index; /* max_nnz */
  double *value;   /* max_nnz */
} nn_csr_buffer;

/* Allocate; NN_ENOMEM (or NN_EINVAL for absurd sizes) leaves *b zeroed.
 * The buffer starts as an empty 0 x 0 matrix. */
int nn_csr_buffer_init(nn_csr_buffer *b, size_t max_rows, size_t max_nnz);
void nn_csr_buffer_free(nn_csr_buffer *b); /* NULL-safe; zeroes *b */
/* b = the non-zero entries of X.  NN_EINVAL if they do not fit. */
int nn_csr_from_dense(nn_csr_buffer *b, const gsl_matrix *X);
/* b = A^T (A->cols rows), every row in ascending column order.  NN_EINVAL
 * if it does not fit.  A must be well-formed. */
int nn_csr_transpose(nn_csr_buffer *b, const nn_csr *A);
/* 1 if A is well-formed: start non-decreasing from 0, columns in range
 * and strictly ascending within each row.  The core's batches and the
 * functions above always are; a model may check an A of other origin. */
int nn_csr_valid(const nn_csr *A);

/* Rows [r0, r1) of A (r0 <= r1 <= A->rows) as a view sharing A's arrays.
 * Its start[0] is A->start[r0], not 0: nn_csr_matmul takes such a view
 * (it reads entries start[i] .. start[i + 1] - 1); nn_csr_valid and
 * nn_csr_transpose do not. */
nn_csr nn_csr_rows(const nn_csr *A, size_t r0, size_t r1);

#define NN_ACT_NONE 0
#define NN_ACT_SIGMOID 1
/* Outputs up to this many columns wide take nn_csr_matmul's narrow path. */
#define NN_CSR_NARROW 16
/* out = act(A B + bias) for a well-formed sparse A (m x k), dense B
 * (k x n), bias 1 x n or NULL, out m x n (must not overlap B).  Each
 * element is the sum of A's stored entries times B in ascending column
 * order (with fused multiply-adds where the CPU has them; for
 * n <= NN_CSR_NARROW, even and odd entries are summed apart and then
 * added), then + bias, then the activation: the same numbers on every
 * x86-64 CPU with FMA, with or without AVX-512.  So a product over a band
 * of B's columns (a view) more than NN_CSR_NARROW wide gives exactly
 * those columns of the product over all of them. */
int nn_csr_matmul(const nn_csr *A, const gsl_matrix *B, const gsl_matrix *bias,
                  int act, gsl_matrix *out);

/* W -= lr * (A B + reg * W) for a well-formed sparse A (m x k), dense B
 * (k x n) and W (m x n, must not overlap B): the plain SGD step with L2
 * (momentum 0) on a gradient A B that is never stored.  The same bits as
 * nn_csr_matmul(A, B, NULL, NN_ACT_NONE, G) followed by
 * nn_sgd_update(W, G, NULL, lr, reg, 0), without the matrix G and the
 * second pass over W.  For a model that was handed the rule through
 * nn_stepper.sgd (the fused-step extension). */
int nn_csr_matmul_sgd(const nn_csr *A, const gsl_matrix *B, gsl_matrix *W,
                      double lr, double reg);

/* out = op(A) B + bias for small dense matrices, op(A) = A, or A^T when
 * trans_a is non-zero; bias is 1 x n or NULL; out must not overlap A or
 * B.  Each element is the sum over k in ascending order (fused
 * multiply-adds where the CPU has them), then + bias: the same numbers on
 * every x86-64 CPU with FMA.  For the few-thousand-element products of an
 * output layer, where a BLAS call costs more than its arithmetic. */
int nn_dense_matmul(const gsl_matrix *A, int trans_a, const gsl_matrix *B,
                    const gsl_matrix *bias, gsl_matrix *out);

#ifdef __cplusplus
}
#endif
#endif /* NN_MATH_H */
