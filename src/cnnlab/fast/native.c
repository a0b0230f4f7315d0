/* Fused CPU kernels for the training view; cnnlab.fast.native builds and loads them, and its
 * docstring says why they are written by hand. Every map is channels-last, (N, H, W, C); the
 * channels go 16 at a time, the last group partly filled where C is not a multiple of 16.
 *
 * pool_conv_*: a single-channel KH x KW convolution (zero padding PH, PW), a 2x2 max-pool and,
 *   optionally, a ReLU, in one pass. x is float32 (N, H, W); the weight is float32 (KH*KW, C),
 *   the bias float32 (C). Each pooled value keeps the index (0..3) of the first maximum in
 *   max_pool2d's window order, or 4 where the ReLU zeroed it, for the backward pass.
 * pool_*: a 2x2 max-pool and optional ReLU of a (N, H, W, C) map, and its backward pass.
 *
 * bf16 != 0: x and the convolution's sums are rounded to bfloat16 as autocast's convolution
 * does (the weight and bias come rounded already), maps are bfloat16, and the weight gradient
 * is left for the caller to round as oneDNN's bf16 backward pass does.
 *
 * Vectors are GCC/Clang vector extensions of 16 floats: one AVX-512 register where the CPU has
 * them, two or four narrower ones elsewhere. Threads are OpenMP's, from the runtime PyTorch has
 * loaded already (libgomp.so.1), so the two never spin against each other. */
#include <stdint.h>
#include <string.h>
#include <omp.h>

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));
typedef uint8_t vb __attribute__((vector_size(16)));

#define MAXK 7
#define INLINE static inline __attribute__((always_inline))

INLINE vf sel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
INLINE vi seli(vi m, vi a, vi b) { return (a & m) | (b & ~m); }

INLINE float bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f; /* NaN stays NaN */
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u; /* round to nearest even */
    memcpy(&f, &u, 4);
    return f;
}

INLINE vf vbf16_round(vf f) {
    vu u = (vu)f;
    vu r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    vi nan = (vi)((u & 0x7fffffffu) > 0x7f800000u);
    return sel(nan, f, (vf)r);
}

INLINE vf load(const void *p, long i, int bf16) {
    if (bf16) {
        vh h;
        memcpy(&h, (const uint16_t *)p + i, sizeof h);
        return (vf)(__builtin_convertvector(h, vu) << 16);
    }
    vf f;
    memcpy(&f, (const float *)p + i, sizeof f);
    return f;
}

INLINE void store(void *p, long i, vf f, int bf16) {
    if (bf16) { /* f holds bf16 values already: keep the high halves */
        vh h = __builtin_convertvector((vu)f >> 16, vh);
        memcpy((uint16_t *)p + i, &h, sizeof h);
    } else {
        memcpy((float *)p + i, &f, sizeof f);
    }
}

INLINE vi load_idx(const uint8_t *p) {
    vb b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, vi);
}

INLINE void store_idx(uint8_t *p, vi id) {
    vb b = __builtin_convertvector(id, vb);
    memcpy(p, &b, sizeof b);
}

/* The same for the first n (1..16) lanes, the rest zero: the last group of channels. With n a
 * compile-time 16 (the compiled copies below) these are the full-width versions. */
INLINE vf loadn(const void *p, long i, int n, int bf16) {
    if (n == 16) return load(p, i, bf16);
    if (bf16) {
        uint16_t t[16] = {0};
        memcpy(t, (const uint16_t *)p + i, sizeof(uint16_t) * n);
        return load(t, 0, 1);
    }
    float t[16] = {0};
    memcpy(t, (const float *)p + i, sizeof(float) * n);
    return load(t, 0, 0);
}

INLINE void storen(void *p, long i, vf f, int n, int bf16) {
    if (n == 16) {
        store(p, i, f, bf16);
        return;
    }
    if (bf16) {
        uint16_t t[16];
        store(t, 0, f, 1);
        memcpy((uint16_t *)p + i, t, sizeof(uint16_t) * n);
    } else {
        memcpy((float *)p + i, &f, sizeof(float) * n);
    }
}

INLINE vi load_idxn(const uint8_t *p, int n) {
    if (n == 16) return load_idx(p);
    uint8_t t[16] = {0};
    memcpy(t, p, n);
    return load_idx(t);
}

INLINE void store_idxn(uint8_t *p, vi id, int n) {
    if (n == 16) {
        store_idx(p, id);
        return;
    }
    uint8_t t[16];
    store_idx(t, id);
    memcpy(p, t, n);
}

/* The first maximum of four in max_pool2d's rule (a NaN wins), then the optional ReLU. */
INLINE void first_max(vf v0, vf v1, vf v2, vf v3, int relu, vf *best, vi *id) {
    vf b = v0;
    vi k = (vi){0};
    vi m = (v1 > b) | (v1 != v1);
    b = sel(m, v1, b), k = seli(m, (vi){0} + 1, k);
    m = (v2 > b) | (v2 != v2);
    b = sel(m, v2, b), k = seli(m, (vi){0} + 2, k);
    m = (v3 > b) | (v3 != v3);
    b = sel(m, v3, b), k = seli(m, (vi){0} + 3, k);
    if (relu) {
        vi live = (b > 0.0f) | (b != b);
        b = sel(live, b, (vf){0}), k = seli(live, k, (vi){0} + 4);
    }
    *best = b, *id = k;
}

/* Rows y0 .. y0+KH of the image, zero-padded and rounded, columns x0 .. x0+cols-1. */
INLINE void rows_of(const float *xn, int H, int W, int y0, int x0, int KH, int cols, int bf16, float *buf) {
    for (int u = 0; u <= KH; u++)
        for (int v = 0; v < cols; v++) {
            int yy = y0 + u, xx = x0 + v;
            float val = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? xn[(long)yy * W + xx] : 0.0f;
            buf[u * cols + v] = bf16 ? bf16_round(val) : val;
        }
}

/* Everything a kernel needs; one struct so that one parallel driver serves them all. */
struct args {
    const float *x, *w, *b;
    const void *in, *g;
    void *out;
    uint8_t *idx;
    float *dw, *db;
    int N, H, W, C, KH, KW, PH, PW, relu;
};

#define MAXCOLS 1024

INLINE void pool_conv_fwd_rows(const struct args *a, long r0, long r1, int C, int KH, int KW, int bf16) {
    const int H = a->H, W = a->W, Ho = (H + 2 * a->PH - KH + 1) / 2, Wo = (W + 2 * a->PW - KW + 1) / 2;
    const int cols = 2 * Wo + KW;
    float buf[(MAXK + 1) * MAXCOLS];
    for (long r = r0; r < r1; r++) {
        const int n = r / Ho, i = r % Ho;
        rows_of(a->x + (long)n * H * W, H, W, 2 * i - a->PH, -a->PW, KH, cols, bf16, buf);
        for (int c = 0; c < C; c += 16) {
            const int m = C - c < 16 ? C - c : 16;
            vf wv[MAXK * MAXK];
            for (int k = 0; k < KH * KW; k++) wv[k] = loadn(a->w, (long)k * C + c, m, 0);
            const vf bias = loadn(a->b, c, m, 0);
            for (int j = 0; j < Wo; j++) {
                const float *p = buf + 2 * j;
                vf a0 = bias, a1 = bias, a2 = bias, a3 = bias;
                for (int ky = 0; ky < KH; ky++)
                    for (int kx = 0; kx < KW; kx++) {
                        const float *q = p + ky * cols + kx;
                        vf w1 = wv[ky * KW + kx];
                        a0 += q[0] * w1, a1 += q[1] * w1, a2 += q[cols] * w1, a3 += q[cols + 1] * w1;
                    }
                if (bf16) a0 = vbf16_round(a0), a1 = vbf16_round(a1), a2 = vbf16_round(a2), a3 = vbf16_round(a3);
                vf best;
                vi id;
                first_max(a0, a1, a2, a3, a->relu, &best, &id);
                const long o = (r * Wo + j) * C + c;
                storen(a->out, o, best, m, bf16);
                store_idxn(a->idx + o, id, m);
            }
        }
    }
}

/* dw (threads, KH*KW, C) and db (threads, C), zeroed by the caller: a slice per thread. */
INLINE void pool_conv_bwd_rows(const struct args *a, long r0, long r1, int t, int C, int KH, int KW, int bf16) {
    const int H = a->H, W = a->W, Ho = (H + 2 * a->PH - KH + 1) / 2, Wo = (W + 2 * a->PW - KW + 1) / 2;
    const int cols = 2 * Wo + KW;
    float buf[(MAXK + 1) * MAXCOLS];
    float *mdw = a->dw + (long)t * KH * KW * C, *mdb = a->db + (long)t * C;
    for (long r = r0; r < r1; r++) {
        const int n = r / Ho, i = r % Ho;
        rows_of(a->x + (long)n * H * W, H, W, 2 * i - a->PH, -a->PW, KH, cols, bf16, buf);
        for (int c = 0; c < C; c += 16) {
            const int m = C - c < 16 ? C - c : 16;
            vf dwv[MAXK * MAXK], dbv = loadn(mdb, c, m, 0), z = {0};
            for (int k = 0; k < KH * KW; k++) dwv[k] = loadn(mdw, (long)k * C + c, m, 0);
            for (int j = 0; j < Wo; j++) {
                const long o = (r * Wo + j) * C + c;
                vf gv = loadn(a->g, o, m, bf16);
                vi id = load_idxn(a->idx + o, m);
                vf g0 = sel(id == 0, gv, z), g1 = sel(id == 1, gv, z), g2 = sel(id == 2, gv, z), g3 = sel(id == 3, gv, z);
                dbv += sel(id < 4, gv, z);
                const float *p = buf + 2 * j;
                for (int ky = 0; ky < KH; ky++)
                    for (int kx = 0; kx < KW; kx++) {
                        const float *q = p + ky * cols + kx;
                        dwv[ky * KW + kx] += q[0] * g0 + q[1] * g1 + q[cols] * g2 + q[cols + 1] * g3;
                    }
            }
            for (int k = 0; k < KH * KW; k++) storen(mdw, (long)k * C + c, dwv[k], m, 0);
            storen(mdb, c, dbv, m, 0);
        }
    }
}

/* The 2x2 windows of rows r0..r1 of the pooled map: forward (bwd == 0) writes the max and its
 * index; backward sends each pooled gradient to the position its index names, and writes zero
 * to the other three. The backward's output (the input's gradient) must be zero beforehand
 * where H or W is odd: the last row or column is in no window. */
INLINE void pool_rows(const struct args *a, long r0, long r1, int C, int bf16, int bwd) {
    const int H = a->H, W = a->W, Ho = H / 2, Wo = W / 2;
    for (long r = r0; r < r1; r++) {
        const int n = r / Ho, i = r % Ho;
        const long top = ((long)n * H + 2 * i) * W * C, row = (long)W * C;
        for (int j = 0; j < Wo; j++) {
            const long s = top + 2L * j * C, o = (r * Wo + j) * C;
            const long at[4] = {s, s + C, s + row, s + row + C}; /* (0,0), (0,1), (1,0), (1,1) */
            for (int c = 0; c < C; c += 16) {
                const int m = C - c < 16 ? C - c : 16;
                if (bwd) {
                    vf gv = loadn(a->g, o + c, m, bf16), z = {0};
                    vi id = load_idxn(a->idx + o + c, m);
                    for (int p = 0; p < 4; p++) storen(a->out, at[p] + c, sel(id == p, gv, z), m, bf16);
                } else {
                    vf best;
                    vi id;
                    first_max(loadn(a->in, at[0] + c, m, bf16), loadn(a->in, at[1] + c, m, bf16),
                              loadn(a->in, at[2] + c, m, bf16), loadn(a->in, at[3] + c, m, bf16), a->relu, &best, &id);
                    storen(a->out, o + c, best, m, bf16);
                    store_idxn(a->idx + o + c, id, m);
                }
            }
        }
    }
}

/* Compiled copies for bf16 and fp32, and for the common shapes, so that loops over channels and
 * taps have constant bounds and the weights stay in registers. OpenMP outlines a parallel
 * region before it inlines, so the region lives in one driver that calls these per thread. */
typedef void (*rows_fn)(const struct args *, long, long, int);

#define COPIES(NAME, BODY)                                                                                      \
    static void NAME##_32_3_3_f(const struct args *a, long r0, long r1, int t) { BODY(32, 3, 3, 0); }          \
    static void NAME##_32_3_3_b(const struct args *a, long r0, long r1, int t) { BODY(32, 3, 3, 1); }          \
    static void NAME##_64_3_3_f(const struct args *a, long r0, long r1, int t) { BODY(64, 3, 3, 0); }          \
    static void NAME##_64_3_3_b(const struct args *a, long r0, long r1, int t) { BODY(64, 3, 3, 1); }          \
    static void NAME##_24_5_5_f(const struct args *a, long r0, long r1, int t) { BODY(24, 5, 5, 0); }          \
    static void NAME##_24_5_5_b(const struct args *a, long r0, long r1, int t) { BODY(24, 5, 5, 1); }          \
    static void NAME##_any_f(const struct args *a, long r0, long r1, int t) { BODY(a->C, a->KH, a->KW, 0); }   \
    static void NAME##_any_b(const struct args *a, long r0, long r1, int t) { BODY(a->C, a->KH, a->KW, 1); }   \
    static rows_fn NAME##_pick(const struct args *a, int bf16) {                                               \
        if (a->C == 32 && a->KH == 3 && a->KW == 3) return bf16 ? NAME##_32_3_3_b : NAME##_32_3_3_f;           \
        if (a->C == 64 && a->KH == 3 && a->KW == 3) return bf16 ? NAME##_64_3_3_b : NAME##_64_3_3_f;           \
        if (a->C == 24 && a->KH == 5 && a->KW == 5) return bf16 ? NAME##_24_5_5_b : NAME##_24_5_5_f;           \
        return bf16 ? NAME##_any_b : NAME##_any_f;                                                             \
    }

#define FWD_BODY(C, KH, KW, BF) (void)t, pool_conv_fwd_rows(a, r0, r1, C, KH, KW, BF)
#define BWD_BODY(C, KH, KW, BF) pool_conv_bwd_rows(a, r0, r1, t, C, KH, KW, BF)
#define PFWD_BODY(C, KH, KW, BF) (void)t, pool_rows(a, r0, r1, C, BF, 0)
#define PBWD_BODY(C, KH, KW, BF) (void)t, pool_rows(a, r0, r1, C, BF, 1)
COPIES(conv_fwd, FWD_BODY)
COPIES(conv_bwd, BWD_BODY)
COPIES(pool_fwd, PFWD_BODY)
COPIES(pool_bwd, PBWD_BODY)

static void run(rows_fn f, const struct args *a, long rows) {
#pragma omp parallel
    {
        const long t = omp_get_thread_num(), T = omp_get_num_threads();
        f(a, rows * t / T, rows * (t + 1) / T, (int)t);
    }
}

static int conv_ok(int C, int KH, int KW, int W, int PW) {
    return C >= 1 && KH >= 1 && KW >= 1 && KH <= MAXK && KW <= MAXK && W + 2 * PW + 2 <= MAXCOLS;
}

/* The entry points; each returns 0, or -1 for a shape it does not compute (no channels, a kernel
 * over 7, an image wider than MAXCOLS - 2 - 2 * padding). */
int pool_conv_forward(const float *x, const float *w, const float *b, void *out, uint8_t *idx, int N, int H, int W,
                      int C, int KH, int KW, int PH, int PW, int relu, int bf16) {
    if (!conv_ok(C, KH, KW, W, PW)) return -1;
    struct args a = {.x = x, .w = w, .b = b, .out = out, .idx = idx, .N = N, .H = H, .W = W, .C = C, .KH = KH,
                     .KW = KW, .PH = PH, .PW = PW, .relu = relu};
    run(conv_fwd_pick(&a, bf16), &a, (long)N * ((H + 2 * PH - KH + 1) / 2));
    return 0;
}

int pool_conv_backward(const float *x, const void *g, const uint8_t *idx, float *dw, float *db, int N, int H, int W,
                       int C, int KH, int KW, int PH, int PW, int bf16) {
    if (!conv_ok(C, KH, KW, W, PW)) return -1;
    struct args a = {.x = x, .g = g, .idx = (uint8_t *)idx, .dw = dw, .db = db, .N = N, .H = H, .W = W, .C = C,
                     .KH = KH, .KW = KW, .PH = PH, .PW = PW};
    run(conv_bwd_pick(&a, bf16), &a, (long)N * ((H + 2 * PH - KH + 1) / 2));
    return 0;
}

int pool_forward(const void *in, void *out, uint8_t *idx, int N, int H, int W, int C, int relu, int bf16) {
    if (C < 1) return -1;
    struct args a = {.in = in, .out = out, .idx = idx, .N = N, .H = H, .W = W, .C = C, .relu = relu};
    run(pool_fwd_pick(&a, bf16), &a, (long)N * (H / 2));
    return 0;
}

int pool_backward(const void *g, const uint8_t *idx, void *gin, int N, int H, int W, int C, int bf16) {
    if (C < 1) return -1;
    struct args a = {.g = g, .idx = (uint8_t *)idx, .out = gin, .N = N, .H = H, .W = W, .C = C};
    run(pool_bwd_pick(&a, bf16), &a, (long)N * (H / 2));
    return 0;
}

/* How many slices pool_conv_backward's dw and db need: one per thread of the next region. */
int max_threads(void) { return omp_get_max_threads(); }
