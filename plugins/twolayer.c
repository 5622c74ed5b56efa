/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `twolayer` model plugin: the course's two-layer network.
 *
 *   H      = sigmoid(X W1 + b1)     W1: n_in x h, b1: 1 x h
 *   scores = H W2 + b2              W2: h x n_out, b2: 1 x n_out
 *
 * The core applies softmax + cross-entropy to the scores.  This is the hot
 * loop of a training run, so every buffer is allocated once in create for
 * max_batch rows and the element-wise work is fused into as few passes
 * over memory as possible.  The first layer, 98 % of the arithmetic, runs
 * on the batch as compressed sparse rows (MNIST is 81 % zeros): X W1 with
 * bias and sigmoid fused, and dW1 = X^T dZ1 as transpose(X) times dZ1, both
 * through nn_csr_matmul.  The core hands sparse batches over directly,
 * with their transpose (the sparse-input extension); a dense X is
 * compressed first, so both paths compute the same numbers.  The small
 * output-layer products go through nn_dense_matmul: at 64 x 128 x 10 a
 * dgemm call costs more in setup than in arithmetic.  When the optimizer
 * can step in parts, the core takes the fused-step extension: the
 * optimizer step is taken inside backward, on each block of W1's rows
 * right after its gradient.  When that step is plain SGD (the optimizer
 * hands its rule over through nn_stepper.sgd), the model applies it to W1
 * itself, row by row inside the product that makes dW1
 * (nn_csr_matmul_sgd), so dW1 is never stored and W1 is read and written
 * once per batch. */
#include <config.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>

enum { TWOLAYER_W1, TWOLAYER_B1, TWOLAYER_W2, TWOLAYER_B2, TWOLAYER_NPARAM };

#define TWOLAYER_MAX_HIDDEN 1000000

/* Rows of W1 per block of the fused step (twolayer_step_w1): 32 rows of
 * dW1, 32 KB at 128 hidden units, are still in L1 when the optimizer
 * reads them back. */
#define TWOLAYER_STEP_ROWS 32

/* Columns of W1 per band of the banded step (twolayer_banded_step): 784 x
 * 128 doubles = 800 KB, which stay in a 1 MB L2 from the band's update to
 * the next batch's forward through it.  128 is also the width of the
 * sparse product's AVX-512 tile: narrower bands made it pass over the
 * batch more often (64 columns: the in-band forward took three times as
 * long).  A band may grow by up to NN_CSR_NARROW columns so that the last
 * one is never narrow enough to take the product's narrow path (whose
 * sums are ordered differently). */
#define TWOLAYER_BAND 128
#define TWOLAYER_BAND_MAX (TWOLAYER_BAND + NN_CSR_NARROW)

/* A core's L2 on the machines this was tuned on (AMD EPYC: 1 MB). */
#define TWOLAYER_L2_BYTES ((size_t)1 << 20)

typedef struct twolayer_model {
  size_t n_in, n_hidden, n_out, max_batch;
  int far; /* W1 is larger than L2: its rows, H's and dH's are padded
              (twolayer_row_stride), and the banded step applies */
  size_t last_rows; /* rows of the last successful forward(); 0 = none */
  /* W1, b1, W2, b2 in that order; every value and grad is owned here. */
  nn_param params[TWOLAYER_NPARAM];
  gsl_matrix *H;  /* max_batch x h: hidden activations of the last forward,
                     kept for dW2 and for sigmoid' = H (1 - H) */
  gsl_matrix *dH; /* max_batch x h: dscores W2^T, then dZ1 in place */
  nn_csr_buffer Xd; /* a dense X compressed (dense forward/backward only) */
  nn_csr_buffer Xt; /* X^T for dW1 when the core gives none: n_in rows */
  gsl_matrix *W2t;  /* n_out x h: W2 transposed for dH = dscores W2^T */
  gsl_matrix *gband; /* one block of dW1 in the banded step (see
                        twolayer_banded_step): a few KB, stays in L1;
                        NULL unless far (the only case that bands) */
} twolayer_model;

static const nn_option twolayer_options[] = {
    {"hidden_size", NN_OPT_INT, "128", "number of sigmoid hidden units",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)TWOLAYER_MAX_HIDDEN},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

static void twolayer_destroy(void *self) {
  twolayer_model *m = self;
  if (!m)
    return;
  for (size_t k = 0; k < TWOLAYER_NPARAM; k++) {
    gsl_matrix_free(m->params[k].value);
    gsl_matrix_free(m->params[k].grad);
  }
  gsl_matrix_free(m->H);
  gsl_matrix_free(m->dH);
  nn_csr_buffer_free(&m->Xd);
  nn_csr_buffer_free(&m->Xt);
  gsl_matrix_free(m->W2t);
  gsl_matrix_free(m->gband);
  free(m);
}

/* a * b * sizeof(double) fits in size_t: checked up front so that a
 * network too large to address says so, rather than "cannot allocate". */
static int twolayer_fits(size_t a, size_t b) {
  return a <= SIZE_MAX / sizeof(double) / b;
}

/* Doubles between rows of W1, H and dH.  Unpadded while W1 fits in L2.
 * Beyond, the banded step walks bands of 128 columns down all the rows:
 * with rows a power of two apart (4 KB and up: 512 hidden units and up)
 * a band's rows fall into the same few L1 sets and evict each other.
 * Rounding up to whole cache lines plus one line spreads them: at 1024
 * units, the band products' cycles per epoch went from 1180 to 640-790 M
 * (dW1) and 1250 to 770-1010 M (the next batch's forward). */
static size_t twolayer_row_stride(size_t nh, int far) {
  return far ? (nh + 7) / 8 * 8 + 8 : nh;
}

static int twolayer_param_init(nn_param *p, const char *name, uint32_t flags,
                               size_t rows, size_t cols, size_t tda) {
  p->name = name;
  p->flags = flags;
  /* Zeroed: biases must start at exactly zero, and grads start defined.
   * Cache-line aligned for the vector loads (see nn_matrix_calloc_aligned). */
  p->value = nn_matrix_calloc_strided(rows, cols, tda);
  p->grad = nn_matrix_calloc_strided(rows, cols, tda);
  return p->value && p->grad;
}

/* What twolayer_create allocates for these arguments (nn_memory): the
 * same matrices and buffers, counted rather than made. */
static int twolayer_memory(const nn_value *opts, nn_shape in, size_t n_out,
                           size_t max_batch, nn_memory *need) {
  const size_t n_in = nn_shape_size(in);
  const int64_t h = opts ? opts[0].i : 128;
  if (!need || h < 1 || h > TWOLAYER_MAX_HIDDEN || n_in == 0 || n_out == 0 ||
      max_batch == 0)
    return NN_EINVAL;
  const size_t nh = (size_t)h;
  const int far = nn_mem_doubles(n_in, nh) > TWOLAYER_L2_BYTES;
  const size_t stride = twolayer_row_stride(nh, far);
  const uint64_t weights =
      nn_mem_add(nn_mem_add(nn_mem_doubles(n_in, stride), nn_mem_doubles(1, nh)),
                 nn_mem_add(nn_mem_doubles(nh, n_out), nn_mem_doubles(1, n_out)));
  uint64_t bytes = nn_mem_mul(weights, 2); /* values and gradients */
  bytes = nn_mem_add(bytes, nn_mem_mul(nn_mem_doubles(max_batch, stride), 2));
  bytes = nn_mem_add(bytes, nn_mem_doubles(n_out, nh)); /* W2t */
  if (far)
    bytes = nn_mem_add(bytes, nn_mem_doubles(TWOLAYER_STEP_ROWS,
                                              nh < TWOLAYER_BAND_MAX
                                                  ? nh : TWOLAYER_BAND_MAX));
  const uint64_t cells = nn_mem_mul(max_batch, n_in);
  bytes = nn_mem_add(bytes, nn_mem_add(nn_mem_csr(max_batch, cells),
                                       nn_mem_csr(n_in, cells)));
  *need = (nn_memory){.bytes = nn_mem_add(bytes, sizeof(twolayer_model)),
                      .weights = weights};
  return NN_OK;
}

static int twolayer_create(const nn_value *opts, nn_shape in, size_t n_out,
                           size_t max_batch, gsl_rng *rng, void **out,
                           nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL output pointer");
  *out = NULL;
  /* Each example is a flat vector of its c h w values. */
  const size_t n_in = nn_shape_size(in);
  /* opts == NULL means "all defaults" (convenient for tests and tools). */
  const int64_t h = opts ? opts[0].i : 128;
  if (h < 1 || h > TWOLAYER_MAX_HIDDEN)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: hidden_size %lld is outside 1..%d",
                        (long long)h, TWOLAYER_MAX_HIDDEN);
  if (n_in == 0 || n_out == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: n_in (%zu), n_out (%zu) and max_batch "
                        "(%zu) must all be positive",
                        n_in, n_out, max_batch);
  if (!rng)
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL random generator");
  const size_t nh = (size_t)h;
  if (!twolayer_fits(n_in, nh) || !twolayer_fits(nh, n_out) ||
      !twolayer_fits(max_batch, nh) || !twolayer_fits(max_batch, n_in))
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: %zu-%zu-%zu network with batch %zu is too "
                        "large",
                        n_in, nh, n_out, max_batch);

  twolayer_model *m = calloc(1, sizeof *m);
  if (!m)
    return nn_error_set(err, NN_ENOMEM, "twolayer: out of memory");
  m->n_in = n_in;
  m->n_hidden = nh;
  m->n_out = n_out;
  m->max_batch = max_batch;
  m->far = n_in * nh * sizeof(double) > TWOLAYER_L2_BYTES;
  const size_t stride = twolayer_row_stride(nh, m->far);
  /* (nn_matrix_calloc_strided refuses a padded size that overflows.) */
  int ok = twolayer_param_init(&m->params[TWOLAYER_W1], "W1", NN_PARAM_WEIGHT,
                               n_in, nh, stride);
  ok &= twolayer_param_init(&m->params[TWOLAYER_B1], "b1", NN_PARAM_BIAS, 1,
                            nh, nh);
  ok &= twolayer_param_init(&m->params[TWOLAYER_W2], "W2", NN_PARAM_WEIGHT,
                            nh, n_out, n_out);
  ok &= twolayer_param_init(&m->params[TWOLAYER_B2], "b2", NN_PARAM_BIAS, 1,
                            n_out, n_out);
  m->H = nn_matrix_calloc_strided(max_batch, nh, stride);
  m->dH = nn_matrix_calloc_strided(max_batch, nh, stride);
  m->W2t = nn_matrix_calloc_aligned(n_out, nh);
  if (m->far)
    m->gband = nn_matrix_calloc_aligned(
        TWOLAYER_STEP_ROWS, nh < TWOLAYER_BAND_MAX ? nh : TWOLAYER_BAND_MAX);
  /* Room for a fully dense batch: the worst case, touched only as far as
   * the batches actually fill it. */
  ok &= nn_csr_buffer_init(&m->Xd, max_batch, max_batch * n_in) == NN_OK;
  ok &= nn_csr_buffer_init(&m->Xt, n_in, max_batch * n_in) == NN_OK;
  if (!ok || !m->H || !m->dH || !m->W2t || (m->far && !m->gband)) {
    twolayer_destroy(m);
    return nn_error_set(err, NN_ENOMEM,
                        "twolayer: cannot allocate a %zu-%zu-%zu network for "
                        "batches of %zu",
                        n_in, nh, n_out, max_batch);
  }
  /* Draw order (W1 fully, then W2) is part of the seed contract. */
  nn_fill_gaussian(m->params[TWOLAYER_W1].value, rng, 0.001);
  nn_fill_gaussian(m->params[TWOLAYER_W2].value, rng, 0.001);
  *out = m;
  return NN_OK;
}

static nn_param *twolayer_params(void *self, size_t *n) {
  twolayer_model *m = self;
  if (n)
    *n = m ? TWOLAYER_NPARAM : 0;
  return m ? m->params : NULL;
}

/* Shapes of a call on a batch given as compressed rows (Xs) or as a
 * dense matrix (Xd), the other NULL: X is B x n_in with 1 <= B <=
 * max_batch, and s (the scores or dscores, named `what`) is B x n_out. */
static int twolayer_check(const twolayer_model *m, const nn_csr *Xs,
                          const gsl_matrix *Xd, const gsl_matrix *s,
                          const char *what, nn_error *err) {
  if (!m || (!Xs && !Xd))
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL argument");
  return nn_check_batch("twolayer", Xs ? Xs->rows : Xd->size1,
                        Xs ? Xs->cols : Xd->size2, m->n_in, m->max_batch, s,
                        m->n_out, what, err);
}

/* The hidden units [c0, c1) of batch X: H[:, c0:c1] = sigmoid(X W1 + b1)
 * over those columns, in one pass (a band of them gives the bits of the
 * whole product's columns: see nn_csr_matmul). */
static int twolayer_hidden(twolayer_model *m, const nn_csr *X, size_t c0,
                           size_t c1, nn_error *err) {
  gsl_matrix_const_view W = gsl_matrix_const_submatrix(
      m->params[TWOLAYER_W1].value, 0, c0, m->n_in, c1 - c0);
  gsl_matrix_const_view b = gsl_matrix_const_submatrix(
      m->params[TWOLAYER_B1].value, 0, c0, 1, c1 - c0);
  gsl_matrix_view H = gsl_matrix_submatrix(m->H, 0, c0, X->rows, c1 - c0);
  if (nn_csr_matmul(X, &W.matrix, &b.matrix, NN_ACT_SIGMOID, &H.matrix) !=
      NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: X W1 shape mismatch");
  return NN_OK;
}

/* scores = H W2 + b2 for the B rows of H just computed; backward may
 * follow on those rows. */
static int twolayer_output(twolayer_model *m, size_t B, gsl_matrix *scores,
                           nn_error *err) {
  gsl_matrix_view H = gsl_matrix_submatrix(m->H, 0, 0, B, m->n_hidden);
  if (nn_dense_matmul(&H.matrix, 0, m->params[TWOLAYER_W2].value,
                      m->params[TWOLAYER_B2].value, scores) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: H W2 shape mismatch");
  m->last_rows = B;
  return NN_OK;
}

static int twolayer_forward_core(twolayer_model *m, const nn_csr *X,
                                 gsl_matrix *scores, nn_error *err) {
  m->last_rows = 0; /* a failed forward leaves nothing for backward */
  int rc = twolayer_hidden(m, X, 0, m->n_hidden, err);
  return rc != NN_OK ? rc : twolayer_output(m, X->rows, scores, err);
}

static int twolayer_forward_csr(void *self, const nn_context *ctx,
                                const nn_csr *X, gsl_matrix *scores,
                                nn_error *err) {
  twolayer_model *m = self;
  (void)ctx; /* the same in training and evaluation, and not random */
  int rc = twolayer_check(m, X, NULL, scores, "scores", err);
  if (rc != NN_OK)
    return rc;
  return twolayer_forward_core(m, X, scores, err);
}

static int twolayer_forward(void *self, const nn_context *ctx,
                            const gsl_matrix *X, gsl_matrix *scores,
                            nn_error *err) {
  twolayer_model *m = self;
  (void)ctx; /* the same in training and evaluation, and not random */
  int rc = twolayer_check(m, NULL, X, scores, "scores", err);
  if (rc != NN_OK)
    return rc;
  m->last_rows = 0;
  if (nn_csr_from_dense(&m->Xd, X) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: cannot compress X");
  return twolayer_forward_core(m, &m->Xd.csr, scores, err);
}

/* Ask the CPU to start loading W's block [r0, r1) x [c0, c1) for
 * writing. */
static void twolayer_prefetch(const gsl_matrix *W, size_t r0, size_t r1,
                              size_t c0, size_t c1) {
#if defined(__GNUC__)
  for (size_t r = r0; r < r1; r++) {
    const char *p = (const char *)(W->data + r * W->tda + c0);
    const size_t bytes = (c1 - c0) * sizeof(double);
    for (size_t off = 0; off < bytes; off += 64)
      __builtin_prefetch(p + off, 1, 3);
  }
#else
  (void)W, (void)r0, (void)r1, (void)c0, (void)c1;
#endif
}

/* The optimizer's plain SGD rule for W1, when it has handed the step over
 * (nn_stepper.sgd). */
typedef struct twolayer_rule {
  double lr, reg;
} twolayer_rule;

/* dW1 = X^T dZ1 over the columns [c0, c1) and W1's step.  With rule
 * (handed over through st->sgd), both in one pass, each row of W1 updated
 * as soon as its gradient is summed.  Otherwise 32 rows at a time, each
 * block stepped as soon as it is final, while it is still in L1.  With
 * banded set, a block goes into the scratch m->gband and to st->block, so
 * W1's 6.4 MB (at 1024 units) gradient matrix is never written; otherwise
 * into W1's grad and to st->rows (c0 = 0, c1 = nh).
 * When W1 is larger than a core's L2, each block's rows of W1 come from
 * memory: asking for them before the block's product lets the loads
 * overlap the arithmetic (at 1024 units, before the bands: backward
 * 1.02-1.10 s per epoch against 1.28-1.33 s in alternating runs). */
static int twolayer_step_w1(twolayer_model *m, const nn_csr *Xt,
                            const gsl_matrix *dZ1, size_t c0, size_t c1,
                            int banded, const nn_stepper *st,
                            const twolayer_rule *rule, nn_error *err) {
  gsl_matrix *W1 = m->params[TWOLAYER_W1].value;
  gsl_matrix_const_view dZ =
      gsl_matrix_const_submatrix(dZ1, 0, c0, dZ1->size1, c1 - c0);
  if (rule) {
    /* The step is ours: each row of dW1 is summed in registers and its
     * row of W1 updated at once, the gradient never stored. */
    gsl_matrix_view W = gsl_matrix_submatrix(W1, 0, c0, m->n_in, c1 - c0);
    if (nn_csr_matmul_sgd(Xt, &dZ.matrix, &W.matrix, rule->lr, rule->reg) !=
        NN_OK)
      return nn_error_set(err, NN_EINVAL, "twolayer: X^T dZ1 shape mismatch");
    return NN_OK;
  }
  for (size_t r0 = 0; r0 < m->n_in; r0 += TWOLAYER_STEP_ROWS) {
    const size_t r1 = m->n_in - r0 < TWOLAYER_STEP_ROWS
                          ? m->n_in
                          : r0 + TWOLAYER_STEP_ROWS;
    if (m->far)
      twolayer_prefetch(W1, r0, r1, c0, c1);
    const nn_csr part = nn_csr_rows(Xt, r0, r1);
    gsl_matrix_view g =
        banded ? gsl_matrix_submatrix(m->gband, 0, 0, r1 - r0, c1 - c0)
               : gsl_matrix_submatrix(m->params[TWOLAYER_W1].grad, r0, c0,
                                      r1 - r0, c1 - c0);
    if (nn_csr_matmul(&part, &dZ.matrix, NULL, NN_ACT_NONE, &g.matrix) !=
        NN_OK)
      return nn_error_set(err, NN_EINVAL, "twolayer: X^T dZ1 shape mismatch");
    int rc = banded ? st->block(st->ctx, TWOLAYER_W1, r0, r1, c0, c1,
                                &g.matrix, err)
                    : st->rows(st->ctx, TWOLAYER_W1, r0, r1, err);
    if (rc != NN_OK)
      return rc;
  }
  return NN_OK;
}

/* The rest of the step and the next batch's forward, band by band
 * (backward_step_forward, when W1 is larger than L2): for each band of
 * TWOLAYER_BAND columns of W1, its gradient and step (twolayer_step_w1),
 * then the next batch's hidden units of that band, from the band of W1
 * just updated, still in L2.  Without bands, W1 went from memory to the
 * core three times a batch (forward, and the step's read and write) plus
 * its gradient's write.  Every sum runs in the order of the unbanded
 * products, so the numbers are those of backward_step followed by the
 * sparse forward.  Called with dZ1 in m->dH and every other parameter
 * stepped; H is overwritten band by band with the next batch's. */
static int twolayer_banded_step(twolayer_model *m, const nn_csr *Xt,
                                const gsl_matrix *dZ1, const nn_stepper *st,
                                const twolayer_rule *rule, const nn_csr *Xn,
                                gsl_matrix *scores_next, nn_error *err) {
  const size_t nh = m->n_hidden;
  m->last_rows = 0; /* H is the next batch's only once every band is */
  for (size_t c0 = 0, c1; c0 < nh; c0 = c1) {
    c1 = nh - c0 < TWOLAYER_BAND ? nh : c0 + TWOLAYER_BAND;
    if (nh - c1 <= NN_CSR_NARROW)
      c1 = nh; /* no narrow band at the end */
    int rc = twolayer_step_w1(m, Xt, dZ1, c0, c1, 1, st, rule, err);
    if (rc == NN_OK)
      rc = twolayer_hidden(m, Xn, c0, c1, err);
    if (rc != NN_OK)
      return rc;
  }
  return twolayer_output(m, Xn->rows, scores_next, err);
}

/* st != NULL: take the optimizer step through st as soon as each
 * parameter's gradient is final (backward_step); NULL: gradients only.
 * Xn != NULL (with st): then the forward on Xn into scores_next
 * (backward_step_forward). */
static int twolayer_backward_core(twolayer_model *m, const nn_csr *X,
                                  const nn_csr *Xt, gsl_matrix *dscores,
                                  const nn_stepper *st, const nn_csr *Xn,
                                  gsl_matrix *scores_next, nn_error *err) {
  const size_t B = X->rows, nh = m->n_hidden;
  if (m->last_rows != B)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: backward on %zu rows needs a forward on "
                        "the same batch first",
                        B);
  gsl_matrix_view H = gsl_matrix_submatrix(m->H, 0, 0, B, nh);
  gsl_matrix_view dH = gsl_matrix_submatrix(m->dH, 0, 0, B, nh);

  /* Output layer: dW2 = H^T dscores, db2 = column sums of dscores. */
  if (nn_dense_matmul(&H.matrix, 1, dscores, NULL,
                      m->params[TWOLAYER_W2].grad) != NN_OK ||
      nn_column_sums(dscores, m->params[TWOLAYER_B2].grad) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: dW2 shape mismatch");

  /* Back into the hidden layer: dH = dscores W2^T, through a transposed
   * copy of W2 (h x 10 -> 10 x h, 1280 numbers) so that the product runs
   * along contiguous rows of h. */
  const gsl_matrix *W2 = m->params[TWOLAYER_W2].value;
  for (size_t j = 0; j < nh; j++)
    for (size_t c = 0; c < m->n_out; c++)
      m->W2t->data[c * m->W2t->tda + j] = W2->data[j * W2->tda + c];
  /* W2 is needed no more (its copy W2t is), nor is b2. */
  int rc;
  if (st && ((rc = st->rows(st->ctx, TWOLAYER_W2, 0, nh, err)) != NN_OK ||
             (rc = st->rows(st->ctx, TWOLAYER_B2, 0, 1, err)) != NN_OK))
    return rc;
  if (nn_dense_matmul(dscores, 0, m->W2t, NULL, &dH.matrix) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: dH shape mismatch");

  /* dZ1 = dH * H (1 - H) in place, with db1 accumulated in the same pass.
   * The derivative comes from the stored activation, so no exp here. */
  if (nn_sigmoid_backward(&dH.matrix, &H.matrix,
                          m->params[TWOLAYER_B1].grad) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: dZ1 shape mismatch");

  if (st && (rc = st->rows(st->ctx, TWOLAYER_B1, 0, 1, err)) != NN_OK)
    return rc;

  /* dW1 = X^T dZ1, as the rows of X^T (one per input) times dZ1: inputs
   * that are zero in the whole batch get a zero row without arithmetic. */
  gsl_matrix *dW1 = m->params[TWOLAYER_W1].grad;
  if (!Xt) {
    if (nn_csr_transpose(&m->Xt, X) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "twolayer: cannot transpose X");
    Xt = &m->Xt.csr;
  }
  if (!st) {
    if (nn_csr_matmul(Xt, &dH.matrix, NULL, NN_ACT_NONE, dW1) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "twolayer: X^T dZ1 shape mismatch");
    return NN_OK;
  }
  /* Asked once per step: a yes counts all of W1 as stepped. */
  twolayer_rule rule;
  const twolayer_rule *own =
      st->sgd && st->sgd(st->ctx, TWOLAYER_W1, &rule.lr, &rule.reg) ? &rule
                                                                    : NULL;
  if (Xn && (own || st->block) && m->far)
    return twolayer_banded_step(m, Xt, &dH.matrix, st, own, Xn, scores_next,
                                err);
  if ((rc = twolayer_step_w1(m, Xt, &dH.matrix, 0, nh, 0, st, own, err)) !=
      NN_OK)
    return rc;
  return Xn ? twolayer_forward_core(m, Xn, scores_next, err) : NN_OK;
}

/* Xt, when given, has the shape and entry count of X's transpose: a
 * mismatch is refused before anything moves. */
static int twolayer_check_xt(const nn_csr *X, const nn_csr *Xt,
                             nn_error *err) {
  if (Xt && (Xt->rows != X->cols || Xt->cols != X->rows || !Xt->start ||
             Xt->start[Xt->rows] != X->start[X->rows] - X->start[0]))
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: X^T is %zux%zu with %zu entries, not the "
                        "transpose of the %zux%zu batch",
                        Xt->rows, Xt->cols, Xt->start ? Xt->start[Xt->rows] : 0,
                        X->rows, X->cols);
  return NN_OK;
}

/* Xt is the core's (twolayer_sparse asks for it), or NULL: then made
 * here. */
static int twolayer_backward_csr(void *self, const nn_csr *X,
                                 const nn_csr *Xt, gsl_matrix *dscores,
                                 nn_error *err) {
  twolayer_model *m = self;
  int rc = twolayer_check(m, X, NULL, dscores, "dscores", err);
  if (rc == NN_OK)
    rc = twolayer_check_xt(X, Xt, err);
  if (rc != NN_OK)
    return rc;
  return twolayer_backward_core(m, X, Xt, dscores, NULL, NULL, NULL, err);
}

/* The arguments of backward_step (and the first half of
 * backward_step_forward's).  The stepper's size must cover sgd, the last
 * member read here: a caller that left it unset is refused rather than
 * half-read. */
static int twolayer_check_step(const twolayer_model *m, const nn_csr *X,
                               const nn_csr *Xt, const gsl_matrix *dscores,
                               const nn_stepper *st, nn_error *err) {
  if (!st || !st->rows)
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL stepper");
  if (st->size < offsetof(nn_stepper, sgd) + sizeof st->sgd)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: the stepper's size (%u bytes) does not "
                        "cover its members (%zu)",
                        (unsigned)st->size,
                        offsetof(nn_stepper, sgd) + sizeof st->sgd);
  int rc = twolayer_check(m, X, NULL, dscores, "dscores", err);
  return rc != NN_OK ? rc : twolayer_check_xt(X, Xt, err);
}

static int twolayer_backward_step(void *self, const nn_csr *X,
                                  const nn_csr *Xt, gsl_matrix *dscores,
                                  const nn_stepper *st, nn_error *err) {
  twolayer_model *m = self;
  int rc = twolayer_check_step(m, X, Xt, dscores, st, err);
  if (rc != NN_OK)
    return rc;
  return twolayer_backward_core(m, X, Xt, dscores, st, NULL, NULL, err);
}

/* Banded when W1 is larger than L2 and the optimizer steps blocks or
 * hands its rule over (twolayer_banded_step); otherwise backward_step
 * then forward. */
static int twolayer_backward_step_forward(
    void *self, const nn_csr *X, const nn_csr *Xt, gsl_matrix *dscores,
    const nn_stepper *st, const nn_context *next_ctx, const nn_csr *Xnext,
    gsl_matrix *scores_next, nn_error *err) {
  twolayer_model *m = self;
  (void)next_ctx; /* as in forward: not used */
  int rc = twolayer_check_step(m, X, Xt, dscores, st, err);
  if (rc == NN_OK)
    rc = twolayer_check(m, Xnext, NULL, scores_next, "next scores", err);
  if (rc != NN_OK)
    return rc;
  return twolayer_backward_core(m, X, Xt, dscores, st, Xnext, scores_next,
                                err);
}

static int twolayer_backward(void *self, const gsl_matrix *X,
                             gsl_matrix *dscores, nn_error *err) {
  twolayer_model *m = self;
  int rc = twolayer_check(m, NULL, X, dscores, "dscores", err);
  if (rc != NN_OK)
    return rc;
  /* Compressed again rather than trusting that Xd still holds this X. */
  if (nn_csr_from_dense(&m->Xd, X) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: cannot compress X");
  return twolayer_backward_core(m, &m->Xd.csr, NULL, dscores, NULL, NULL,
                                NULL, err);
}

/* NN_SPARSE_TRANSPOSE: every backward needs X^T, and the core makes it
 * with the batch, on its helper thread when it has one, off this model's
 * critical path. */
static const nn_model_sparse twolayer_sparse = {
    .size = sizeof(nn_model_sparse),
    .flags = NN_SPARSE_TRANSPOSE,
    .forward = twolayer_forward_csr,
    .backward = twolayer_backward_csr,
};

static const nn_model_fused_step twolayer_fused = {
    .size = sizeof(nn_model_fused_step),
    .backward_step = twolayer_backward_step,
    .backward_step_forward = twolayer_backward_step_forward,
};

static const void *twolayer_extension(void *self, const char *id) {
  (void)self;
  if (!id)
    return NULL;
  if (strcmp(id, NN_EXT_MODEL_SPARSE) == 0)
    return &twolayer_sparse;
  if (strcmp(id, NN_EXT_MODEL_FUSED_STEP) == 0)
    return &twolayer_fused;
  return NULL;
}

static const nn_model_ops twolayer_ops = {
    .size = sizeof(nn_model_ops),
    .flags = 0, /* forward draws no random numbers */
    .create = twolayer_create,
    .destroy = twolayer_destroy,
    .params = twolayer_params,
    .forward = twolayer_forward,
    .backward = twolayer_backward,
    .state = NULL, /* no buffers besides the parameters */
    .extension = twolayer_extension,
    .memory = twolayer_memory,
};

NN_MODEL_PLUGIN("twolayer", "0.1.0",
                "two-layer network: sigmoid hidden layer, linear output",
                twolayer_options, &twolayer_ops);
