/* The LoRA merge of a block of rows, fused in one pass and without torch.
 *
 * Why this exists: the merge of a plain LoRA (W' = W + s·B@A, rank r, per row of W) is
 * what almost every byte of an adapter export goes through. Done with torch it costs
 * torch's import (1.5-2.5 s of one core, before the first merged byte) and four passes
 * over each block (convert, GEMM, finiteness check, cast). Here it is one pass: each
 * tile of a row is converted to float32, gets its rank-r update, is checked and
 * rounded back while it is still in registers (DoRA's per-row rescale needs the whole
 * row first: a second pass over a row buffer that stays in cache).
 *
 * The maths, per element: acc = fma(L[i,r-1], R[r-1,j], … fma(L[i,0], R[0,j], 0)),
 * v = fma(s, acc, W[i,j]), in float32, as torch's addmm computes W + s·(B@A) up to the
 * order of its sums; then (DoRA) v·(m[i] / ‖row i‖₂); then one rounding to the output
 * dtype, to nearest even (bfloat16: torch's integer carry; float16: IEEE). The AVX2
 * path and the portable path do the same operations in the same order, so they give
 * the same bits (tested).
 *
 * The finiteness check is the export's (finite.py): a value that is NaN, ±Inf or
 * beyond the output dtype's largest finite value fails it. The fast pass only counts
 * failures; the caller asks for the exact counts (``detail``) to word its message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

enum { KIND_F32 = 0, KIND_BF16 = 1, KIND_F16 = 2 };

typedef struct {
    const void *base; /* rows×cols of `kind` */
    void *out;        /* rows×cols of `kind` */
    int kind;
    const float *left;  /* rows×rank */
    const float *right; /* rank×cols */
    Py_ssize_t rows, cols, rank;
    float scaling, limit;
    const float *magnitude; /* rows, or NULL */
    float *rowbuf;          /* 2×cols, then rank×cols */
    int check;              /* 0 only for bench/bench_finite.py: the plain path without its check */
} Job;

typedef struct {
    long long bad, nan, inf, beyond;
    double largest; /* largest magnitude among the finite values */
} Counts;

/* ---------------------------------------------------------------- portable scalar path */

static inline float load_one(const void *p, int kind, Py_ssize_t k) {
    if (kind == KIND_F32) return ((const float *)p)[k];
    if (kind == KIND_BF16) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[k] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    return (float)((const _Float16 *)p)[k];
}

static inline void store_one(void *p, int kind, Py_ssize_t k, float v) {
    if (kind == KIND_F32) {
        ((float *)p)[k] = v;
    } else if (kind == KIND_BF16) {
        uint32_t u;
        memcpy(&u, &v, 4);
        u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest even, torch's carry */
        ((uint16_t *)p)[k] = (uint16_t)(u >> 16);
    } else {
        ((_Float16 *)p)[k] = (_Float16)v;
    }
}

static inline void count_one(float v, float limit, Counts *c, int detail) {
    if (!(fabsf(v) <= limit)) {
        c->bad++;
        if (detail) {
            if (isnan(v)) c->nan++;
            else if (isinf(v)) c->inf++;
            else c->beyond++;
        }
    }
    if (detail && isfinite(v) && fabsf(v) > c->largest) c->largest = fabsf(v);
}

/* v = fma(s, Σ_k fma(L[k], R[k,j], ·), W[j]) for columns j0..cols of row `i` into buf */
static void row_tail(const Job *job, Py_ssize_t i, Py_ssize_t j0, float *buf) {
    const float *l = job->left + i * job->rank;
    for (Py_ssize_t j = j0; j < job->cols; j++) {
        float acc = 0.0f;
        for (Py_ssize_t k = 0; k < job->rank; k++) acc = fmaf(l[k], job->right[k * job->cols + j], acc);
        buf[j] = fmaf(job->scaling, acc, load_one(job->base, job->kind, i * job->cols + j));
    }
}

/* DoRA's factor for a merged row: m / ‖row‖₂ in float32 (the norm summed in double) */
static float dora_factor(const Job *job, Py_ssize_t i, const float *buf) {
    double sum = 0.0;
    for (Py_ssize_t j = 0; j < job->cols; j++) sum += (double)buf[j] * (double)buf[j];
    return job->magnitude[i] / (float)sqrt(sum);
}

static void finish_tail(const Job *job, Py_ssize_t i, Py_ssize_t j0, float *buf, float factor, Counts *c, int detail) {
    for (Py_ssize_t j = j0; j < job->cols; j++) {
        float v = job->magnitude ? buf[j] * factor : buf[j];
        count_one(v, job->limit, c, detail);
        store_one(job->out, job->kind, i * job->cols + j, v);
    }
}

static void run_portable(const Job *job, Counts *c, int detail) {
    for (Py_ssize_t i = 0; i < job->rows; i++) {
        row_tail(job, i, 0, job->rowbuf);
        float factor = job->magnitude ? dora_factor(job, i, job->rowbuf) : 1.0f;
        finish_tail(job, i, 0, job->rowbuf, factor, c, detail);
    }
}

/* ---------------------------------------------------------------- AVX2 + FMA + F16C path */

#ifdef HAVE_AVX2_PATH
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __attribute__((always_inline)) __m256 load8(const void *p, int kind, Py_ssize_t k) {
    if (kind == KIND_F32) return _mm256_loadu_ps((const float *)p + k);
    if (kind == KIND_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + k));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + k)));
}

AVX2 static inline __attribute__((always_inline)) void store8(void *p, int kind, Py_ssize_t k, __m256 v) {
    if (kind == KIND_F32) {
        _mm256_storeu_ps((float *)p + k, v);
    } else if (kind == KIND_BF16) {
        __m256i u = _mm256_castps_si256(v);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        u = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
        u = _mm256_srli_epi32(u, 16);
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
        _mm_storeu_si128((__m128i *)((uint16_t *)p + k), packed);
    } else {
        _mm_storeu_si128((__m128i *)((uint16_t *)p + k), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

/* rows i0 and i1 (i1 may equal i0 for the last odd row), 32 columns at a time:
 * 8 accumulators in registers, each load of R used by both rows */
AVX2 static void rows_pair(const Job *job, Py_ssize_t i0, Py_ssize_t i1, float *buf0, float *buf1) {
    const Py_ssize_t cols = job->cols, rank = job->rank;
    const float *l0 = job->left + i0 * rank, *l1 = job->left + i1 * rank;
    const __m256 s = _mm256_set1_ps(job->scaling);
    Py_ssize_t j = 0;
    for (; j + 32 <= cols; j += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (Py_ssize_t k = 0; k < rank; k++) {
            const float *r = job->right + k * cols + j;
            const __m256 x = _mm256_set1_ps(l0[k]), y = _mm256_set1_ps(l1[k]);
            const __m256 r0 = _mm256_loadu_ps(r), r1 = _mm256_loadu_ps(r + 8), r2 = _mm256_loadu_ps(r + 16),
                         r3 = _mm256_loadu_ps(r + 24);
            a0 = _mm256_fmadd_ps(x, r0, a0);
            a1 = _mm256_fmadd_ps(x, r1, a1);
            a2 = _mm256_fmadd_ps(x, r2, a2);
            a3 = _mm256_fmadd_ps(x, r3, a3);
            b0 = _mm256_fmadd_ps(y, r0, b0);
            b1 = _mm256_fmadd_ps(y, r1, b1);
            b2 = _mm256_fmadd_ps(y, r2, b2);
            b3 = _mm256_fmadd_ps(y, r3, b3);
        }
        const Py_ssize_t w0 = i0 * cols + j, w1 = i1 * cols + j;
        _mm256_storeu_ps(buf0 + j, _mm256_fmadd_ps(s, a0, load8(job->base, job->kind, w0)));
        _mm256_storeu_ps(buf0 + j + 8, _mm256_fmadd_ps(s, a1, load8(job->base, job->kind, w0 + 8)));
        _mm256_storeu_ps(buf0 + j + 16, _mm256_fmadd_ps(s, a2, load8(job->base, job->kind, w0 + 16)));
        _mm256_storeu_ps(buf0 + j + 24, _mm256_fmadd_ps(s, a3, load8(job->base, job->kind, w0 + 24)));
        _mm256_storeu_ps(buf1 + j, _mm256_fmadd_ps(s, b0, load8(job->base, job->kind, w1)));
        _mm256_storeu_ps(buf1 + j + 8, _mm256_fmadd_ps(s, b1, load8(job->base, job->kind, w1 + 8)));
        _mm256_storeu_ps(buf1 + j + 16, _mm256_fmadd_ps(s, b2, load8(job->base, job->kind, w1 + 16)));
        _mm256_storeu_ps(buf1 + j + 24, _mm256_fmadd_ps(s, b3, load8(job->base, job->kind, w1 + 24)));
    }
    row_tail(job, i0, j, buf0);
    if (i1 != i0) row_tail(job, i1, j, buf1);
}

AVX2 static void finish_row(const Job *job, Py_ssize_t i, float *buf, Counts *c) {
    const float factor = job->magnitude ? dora_factor(job, i, buf) : 1.0f;
    const __m256 f = _mm256_set1_ps(factor), limit = _mm256_set1_ps(job->limit);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    Py_ssize_t j = 0;
    for (; j + 8 <= job->cols; j += 8) {
        __m256 v = _mm256_loadu_ps(buf + j);
        if (job->magnitude) v = _mm256_mul_ps(v, f);
        const __m256 ok = _mm256_cmp_ps(_mm256_andnot_ps(sign, v), limit, _CMP_LE_OQ); /* NaN: not ok */
        c->bad += 8 - __builtin_popcount((unsigned)_mm256_movemask_ps(ok));
        store8(job->out, job->kind, i * job->cols + j, v);
    }
    finish_tail(job, i, j, buf, factor, c, 0);
}

/* The plain merge (no DoRA): ROWS rows at a time, all their columns in tiles of 16,
 * each tile finished straight into `out` (update, check, rounding) while its sums are
 * still in registers; each load of `right` serves ROWS rows. Row-major, so the base and
 * `out` are read and written in address order (prefetch-friendly: they come from the
 * page cache), and the packed `right` (rank × cols floats) stays in L2 between row
 * groups. Inlined once per dtype (`kind` a constant), so no branch in the loop. */
#define ROWS 6
AVX2 static inline __attribute__((always_inline)) void plain_rows(const Job *job, const float *packed, int kind,
                                                                   int check, Counts *c) {
    const Py_ssize_t cols = job->cols, rank = job->rank, full = cols / 16 * 16;
    const __m256 s = _mm256_set1_ps(job->scaling), limit = _mm256_set1_ps(job->limit), sign = _mm256_set1_ps(-0.0f);
    const void *base = job->base;
    void *out = job->out;
    long long bad = 0;
    for (Py_ssize_t i = 0; i < job->rows; i += ROWS) {
        const float *l[ROWS];
        Py_ssize_t row[ROWS];
        const int n = job->rows - i < ROWS ? (int)(job->rows - i) : ROWS;
        for (int q = 0; q < ROWS; q++) {
            row[q] = q < n ? i + q : i + n - 1; /* past the end: the last row again, not stored */
            l[q] = job->left + row[q] * rank;
        }
        for (Py_ssize_t j = 0; j < full; j += 16) {
            const float *tile = packed + (j / 16) * rank * 16; /* this tile's columns of `right`, k-major */
            __m256 acc[ROWS][2];
            for (int q = 0; q < ROWS; q++) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
            for (Py_ssize_t k = 0; k < rank; k++) {
                const __m256 r0 = _mm256_loadu_ps(tile + 16 * k), r1 = _mm256_loadu_ps(tile + 16 * k + 8);
                for (int q = 0; q < ROWS; q++) {
                    const __m256 x = _mm256_set1_ps(l[q][k]);
                    acc[q][0] = _mm256_fmadd_ps(x, r0, acc[q][0]);
                    acc[q][1] = _mm256_fmadd_ps(x, r1, acc[q][1]);
                }
            }
            for (int q = 0; q < n; q++) {
                for (int h = 0; h < 2; h++) {
                    const Py_ssize_t at = row[q] * cols + j + 8 * h;
                    const __m256 v = _mm256_fmadd_ps(s, acc[q][h], load8(base, kind, at));
                    if (check) {
                        const __m256 ok = _mm256_cmp_ps(_mm256_andnot_ps(sign, v), limit, _CMP_LE_OQ); /* NaN: not ok */
                        bad += 8 - __builtin_popcount((unsigned)_mm256_movemask_ps(ok));
                    }
                    store8(out, kind, at, v);
                }
            }
        }
    }
    c->bad += bad;
}

/* `right`'s columns in tiles of 16, each tile's rank rows one after another (the inner
 * loop then reads memory in order, not rank rows cols apart); then the rows, and the
 * last columns (cols % 16) row by row. */
AVX2 static void run_plain_avx2(const Job *job, float *packed, Counts *c) {
    const Py_ssize_t full = job->cols / 16 * 16, rank = job->rank;
    for (Py_ssize_t j = 0; j < full; j += 16)
        for (Py_ssize_t k = 0; k < rank; k++)
            memcpy(packed + (j / 16) * rank * 16 + 16 * k, job->right + k * job->cols + j, 16 * sizeof(float));
    switch (job->kind * 2 + (job->check != 0)) {
    case 2 * KIND_F32: plain_rows(job, packed, KIND_F32, 0, c); break;
    case 2 * KIND_F32 + 1: plain_rows(job, packed, KIND_F32, 1, c); break;
    case 2 * KIND_BF16: plain_rows(job, packed, KIND_BF16, 0, c); break;
    case 2 * KIND_BF16 + 1: plain_rows(job, packed, KIND_BF16, 1, c); break;
    case 2 * KIND_F16: plain_rows(job, packed, KIND_F16, 0, c); break;
    default: plain_rows(job, packed, KIND_F16, 1, c); break;
    }
    if (full < job->cols) {
        for (Py_ssize_t i = 0; i < job->rows; i++) {
            row_tail(job, i, full, job->rowbuf);
            finish_tail(job, i, full, job->rowbuf, 1.0f, c, 0);
        }
    }
}

AVX2 static void run_avx2(const Job *job, Counts *c) {
    if (job->magnitude == NULL) {
        run_plain_avx2(job, job->rowbuf + 2 * job->cols, c);
        return;
    }
    float *buf0 = job->rowbuf, *buf1 = job->rowbuf + job->cols;
    for (Py_ssize_t i = 0; i < job->rows; i += 2) {
        const Py_ssize_t i1 = i + 1 < job->rows ? i + 1 : i;
        rows_pair(job, i, i1, buf0, buf1);
        finish_row(job, i, buf0, c);
        if (i1 != i) finish_row(job, i1, buf1, c);
    }
}

static int have_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return known;
}
#else
static int have_avx2(void) { return 0; }
#endif

/* ---------------------------------------------------------------- Python binding */

static int need(Py_buffer *b, Py_ssize_t bytes, const char *what) {
    if (b->len < bytes) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", what, b->len, bytes);
        return 0;
    }
    return 1;
}

static const char merge_rows_doc[] =
    "merge_rows(base, out, kind, left, right, rows, cols, rank, scaling, limit, magnitude=None, detail=False, "
    "portable=False, check=True)\n\n"
    "Writes the merged rows into `out` (rows×cols of `kind`: 0 float32, 1 bfloat16, 2 float16) from the base rows "
    "`base` (same shape and kind), `left` (rows×rank float32: B's rows, or Aᵀ's), `right` (rank×cols float32) and "
    "`scaling`; DoRA's `magnitude` (rows float32) rescales each row. Returns how many values failed the finiteness "
    "check (NaN, ±Inf, or |v| > limit); with detail=True, (failed, nan, inf, beyond, largest finite magnitude). "
    "portable=True runs the portable path (tests compare it with the vector path). check=False leaves the "
    "finiteness check out of the vector path's plain merge: only bench/bench_finite.py passes it, to measure "
    "what the check costs; the export always checks. The GIL is released.";

static PyObject *merge_rows(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"base", "out", "kind", "left", "right", "rows", "cols", "rank", "scaling", "limit",
                             "magnitude", "detail", "portable", "check", NULL};
    Py_buffer base = {0}, out = {0}, left = {0}, right = {0};
    PyObject *magnitude = Py_None;
    Py_buffer mag = {0};
    int kind, detail = 0, portable = 0, check = 1;
    Py_ssize_t rows, cols, rank;
    float scaling, limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*w*iy*y*nnnff|Oppp", kwlist, &base, &out, &kind, &left, &right,
                                     &rows, &cols, &rank, &scaling, &limit, &magnitude, &detail, &portable, &check))
        return NULL;
    PyObject *result = NULL;
    int have_mag = magnitude != Py_None;
    if (have_mag && PyObject_GetBuffer(magnitude, &mag, PyBUF_SIMPLE) < 0) goto done;
    if (kind < KIND_F32 || kind > KIND_F16 || rows < 0 || cols < 0 || rank < 0) {
        PyErr_SetString(PyExc_ValueError, "merge_rows: bad kind or shape");
        goto done;
    }
    const Py_ssize_t esize = kind == KIND_F32 ? 4 : 2;
    if (!need(&base, rows * cols * esize, "base") || !need(&out, rows * cols * esize, "out") ||
        !need(&left, rows * rank * 4, "left") || !need(&right, rank * cols * 4, "right") ||
        (have_mag && !need(&mag, rows * 4, "magnitude")))
        goto done;
    /* two rows of float32, then `right` repacked (run_plain_avx2) */
    float *rowbuf = malloc(sizeof(float) * (size_t)(2 * cols + rank * cols + 1));
    if (rowbuf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Job job = {base.buf, out.buf, kind, left.buf, right.buf, rows, cols, rank, scaling, limit,
               have_mag ? mag.buf : NULL, rowbuf, check};
    Counts c = {0, 0, 0, 0, 0.0};
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_AVX2_PATH
    if (!detail && !portable && have_avx2())
        run_avx2(&job, &c);
    else
#endif
        run_portable(&job, &c, detail);
    Py_END_ALLOW_THREADS
    free(rowbuf);
    if (detail)
        result = Py_BuildValue("LLLLd", c.bad, c.nan, c.inf, c.beyond, c.largest);
    else
        result = PyLong_FromLongLong(c.bad);
done:
    PyBuffer_Release(&base);
    PyBuffer_Release(&out);
    PyBuffer_Release(&left);
    PyBuffer_Release(&right);
    if (have_mag && mag.obj != NULL) PyBuffer_Release(&mag);
    return result;
}

static PyObject *vector_path(PyObject *self, PyObject *unused) { return PyBool_FromLong(have_avx2()); }

static PyMethodDef methods[] = {
    {"merge_rows", (PyCFunction)(void (*)(void))merge_rows, METH_VARARGS | METH_KEYWORDS, merge_rows_doc},
    {"vector_path", vector_path, METH_NOARGS, "True when this CPU runs the AVX2+FMA+F16C path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lora_rows", "The fused LoRA row merge (lora_rows.c).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lora_rows(void) { return PyModule_Create(&module); }
