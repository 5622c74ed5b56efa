/* Shared numerics of nnrun (the course's `_base_network`), written once in
 * libnn and used by the core and by plugins.
 *
 * All functions take caller-owned matrices (views are fine), never allocate,
 * and return NN_OK or NN_EINVAL on a shape mismatch / bad label.  Unless a
 * comment says otherwise, `out` may alias the input. */
#ifndef NN_MATH_H
#define NN_MATH_H

#include <nn/plugin.h>

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

/* m[i, :] += b[0, :] for every row (b is 1 x cols). */
int nn_add_row_vector(gsl_matrix *m, const gsl_matrix *b);
/* out[0, j] = sum_i m[i, j] (out is 1 x cols). */
int nn_column_sums(const gsl_matrix *m, gsl_matrix *out);
/* Fill m with scale * N(0, 1) draws from rng, row by row. */
void nn_fill_gaussian(gsl_matrix *m, gsl_rng *rng, double scale);

/* L2 regularization, the course's rule: grad += reg * value for every
 * NN_PARAM_WEIGHT parameter; biases are never touched. */
int nn_apply_l2(nn_param *params, size_t n, double reg);

#ifdef __cplusplus
}
#endif
#endif /* NN_MATH_H */
