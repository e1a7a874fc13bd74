/* TV-L1 iterations (Algorithm 1 of the TVNet paper, `tv_l1_step` in tvnet.py) for the CPU.
 *
 * Why hand-written: each iteration is ~30 flops per pixel over 16 planes, so the solver is
 * bound by memory traffic, not arithmetic. This kernel updates the state in place in one
 * sweep down the rows and runs several iterations in the same sweep, each trailing the
 * previous one by a row (temporal blocking). The rows in flight stay in cache, so the
 * planes go through main memory once per group of iterations instead of ~3 times per
 * iteration. The result is the same arithmetic as the PyTorch step, in the same order.
 *
 * Layout of one image: u, px, py are (2, n, W) planes (channel 0 for u1, 1 for u2) with
 * plane stride `ps`; gi is (2, n, W) with plane stride `gps` (warped dI/dx, dI/dy); gsq
 * and rc are (n, W) (|grad I|^2 + eps, the constant part of rho). Row 0 and row n-1 of a
 * buffer get the image-border formulas; a band of an image is therefore run on a copy with
 * ghost rows around it, which absorb the wrong borders (they spread one row per iteration).
 */
#include <float.h>
#ifdef __AVX__
#include <immintrin.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    float f00, f01, f10, f11; /* forward-difference taps: x (u[i], u[i+1]), y (same) */
    float bx0, bx1, by0, by1; /* divergence taps: p[i-1], p[i] for x, then for y */
    float lt, theta, taut, eps; /* lambda*theta, theta, tau/theta, eps */
} Params;

typedef struct {
    float *u, *px, *py;           /* state, plane stride ps */
    const float *gi, *gsq, *rc;   /* warped gradients (plane stride gps) and data term */
    size_t ps, gps;
    int n, W;                     /* rows in the buffer, columns */
} Buf;

/* u <- v + theta * div p at one pixel; ax1/ax0 are the x divergence taps there (0 off-image). */
static inline void u_pixel(const Params *k, const Buf *b, size_t o, size_t oy_prev, float ax1,
                           float ax0, float ay1, float ay0) {
    float *u0 = b->u, *u1 = b->u + b->ps;
    const float *px0 = b->px, *px1 = b->px + b->ps, *py0 = b->py, *py1 = b->py + b->ps;
    float g0 = b->gi[o], g1 = b->gi[o + b->gps];
    float rho = b->rc[o] + (g0 * u0[o] + g1 * u1[o]);
    float t = rho / b->gsq[o];
    t = t < -k->lt ? -k->lt : (t > k->lt ? k->lt : t);
    float d0 = (ax1 * px0[o] + ax0 * px0[o - (ax0 != 0.0f)]) + (ay1 * py0[o] + ay0 * py0[oy_prev]);
    float d1 = (ax1 * px1[o] + ax0 * px1[o - (ax0 != 0.0f)]) + (ay1 * py1[o] + ay0 * py1[oy_prev]);
    u0[o] = (u0[o] - t * g0) + k->theta * d0;
    u1[o] = (u1[o] - t * g1) + k->theta * d1;
}

static void u_row(const Params *k, const Buf *b, int r) {
    const int W = b->W;
    const size_t row = (size_t)r * W, prev = r > 0 ? row - W : row;
    const float ay1 = r < b->n - 1 ? k->by1 : 0.0f, ay0 = r > 0 ? k->by0 : 0.0f;
    if (W == 1) {
        u_pixel(k, b, row, prev, 0.0f, 0.0f, ay1, ay0);
        return;
    }
    u_pixel(k, b, row, prev, k->bx1, 0.0f, ay1, ay0);
    float *restrict u0 = b->u + row, *restrict u1 = b->u + b->ps + row;
    const float *restrict px0 = b->px + row, *restrict px1 = b->px + b->ps + row;
    const float *restrict py0 = b->py + row, *restrict py1 = b->py + b->ps + row;
    const float *restrict qy0 = b->py + prev, *restrict qy1 = b->py + b->ps + prev;
    const float *restrict g0 = b->gi + row, *restrict g1 = b->gi + b->gps + row;
    const float *restrict gsq = b->gsq + row, *restrict rc = b->rc + row;
    const float lt = k->lt, th = k->theta, bx0 = k->bx0, bx1 = k->bx1;
#pragma GCC ivdep
    for (int x = 1; x < W - 1; x++) { /* the interior: no branches, vectorised */
        float rho = rc[x] + (g0[x] * u0[x] + g1[x] * u1[x]);
        float t = rho / gsq[x];
        t = t < -lt ? -lt : (t > lt ? lt : t);
        float d0 = (bx1 * px0[x] + bx0 * px0[x - 1]) + (ay1 * py0[x] + ay0 * qy0[x]);
        float d1 = (bx1 * px1[x] + bx0 * px1[x - 1]) + (ay1 * py1[x] + ay0 * qy1[x]);
        u0[x] = (u0[x] - t * g0[x]) + th * d0;
        u1[x] = (u1[x] - t * g1[x]) + th * d1;
    }
    u_pixel(k, b, row + W - 1, prev + W - 1, 0.0f, k->bx0, ay1, ay0);
}

/* p <- (p + taut * grad u) / (1 + taut * |grad u|) for one row, per flow channel. */
static void p_row(const Params *k, const Buf *b, int r) {
    const int W = b->W;
    const size_t row = (size_t)r * W;
    const int last = r == b->n - 1;
    const size_t next = last ? row : row + W;
    const float cy0 = last ? 0.0f : k->f10, cy1 = last ? 0.0f : k->f11;
    const float taut = k->taut, eps = k->eps, f00 = k->f00, f01 = k->f01;
    for (int c = 0; c < 2; c++) {
        const float *restrict u = b->u + c * b->ps + row, *restrict un = b->u + c * b->ps + next;
        float *restrict px = b->px + c * b->ps + row, *restrict py = b->py + c * b->ps + row;
#pragma GCC ivdep
        for (int x = 0; x < W - 1; x++) {
            float ux = f00 * u[x] + f01 * u[x + 1];
            float uy = cy0 * u[x] + cy1 * un[x];
            float nrm = 1.0f + taut * sqrtf(ux * ux + uy * uy + eps);
            px[x] = (px[x] + taut * ux) / nrm;
            py[x] = (py[x] + taut * uy) / nrm;
        }
        int x = W - 1; /* last column: no x difference */
        float uy = cy0 * u[x] + cy1 * un[x];
        float nrm = 1.0f + taut * sqrtf(uy * uy + eps);
        px[x] = px[x] / nrm;
        py[x] = (py[x] + taut * uy) / nrm;
    }
}

/* `m` iterations in one sweep: iteration j works on row t - j, one row behind j - 1, which
 * has by then finished the rows that row needs (its p row below and its u row). */
static void sweep(const Params *k, const Buf *b, int m) {
    const int n = b->n;
    for (int t = 0; t < n + m - 1; t++) {
        for (int j = 0; j < m; j++) {
            int s = t - j;
            if (s < 0 || s >= n) continue;
            u_row(k, b, s);
            if (s > 0) p_row(k, b, s - 1);
            if (s == n - 1) p_row(k, b, s);
        }
    }
}

static void run(const Params *k, const Buf *b, int iters, int group) {
    for (int done = 0; done < iters; done += group)
        sweep(k, b, iters - done < group ? iters - done : group);
}

static Params params(const float *taps, const float *consts) {
    Params k = {taps[0], taps[1], taps[2], taps[3], taps[4], taps[5], taps[6], taps[7],
                consts[0], consts[1], consts[2], consts[3]};
    return k;
}

/* `iters` iterations in place on a whole image (2, H, W). Returns 0. */
int tvl1_image(int H, int W, int iters, int group, float *u, float *px, float *py,
               const float *gi, const float *gsq, const float *rc,
               const float *taps, const float *consts) {
    Params k = params(taps, consts);
    Buf b = {u, px, py, gi, gsq, rc, (size_t)H * W, (size_t)H * W, H, W};
    run(&k, &b, iters, group);
    return 0;
}

/* Rows of a band with its ghost rows: [r0 - iters - 2, r1 + iters + 2) within the image. */
static inline int ghost_lo(int r0, int iters) { return r0 - iters - 2 < 0 ? 0 : r0 - iters - 2; }
static inline int ghost_hi(int r1, int iters, int H) { return r1 + iters + 2 > H ? H : r1 + iters + 2; }

/* `iters` iterations for rows [r0, r1) of an (H, W) image: state (u, px, py) read from src,
 * those rows written to dst, on a copy in `mem` (6 * (rows with ghosts) * W floats). The
 * state's channels and gi's are `img` floats apart; gsq and rc are (H, W). */
static void band_iterate(const Params *k, int H, int W, int r0, int r1, int iters, int group,
                         const float *const *src, float *const *dst, size_t img, const float *gi,
                         const float *gsq, const float *rc, float *mem) {
    int a = ghost_lo(r0, iters), e = ghost_hi(r1, iters, H);
    size_t n = (size_t)(e - a), plane = n * W, off = (size_t)a * W;
    for (int v = 0; v < 3; v++)
        for (int c = 0; c < 2; c++)
            memcpy(mem + (2 * v + c) * plane, src[v] + c * img + off, plane * sizeof(float));
    Buf b = {mem, mem + 2 * plane, mem + 4 * plane, gi + off, gsq + off, rc + off, plane, img, (int)n, W};
    run(k, &b, iters, group);
    for (int v = 0; v < 3; v++)
        for (int c = 0; c < 2; c++)
            memcpy(dst[v] + c * img + (size_t)r0 * W, mem + (2 * v + c) * plane + (size_t)(r0 - a) * W,
                   (size_t)(r1 - r0) * W * sizeof(float));
}

/* `iters` iterations for rows [r0, r1) of an image: reads state from *_in, writes those rows
 * of *_out (other rows untouched). Works on a private copy with iters + 2 ghost rows on each
 * side. Returns 0, or -1 when out of memory. */
int tvl1_band(int H, int W, int r0, int r1, int iters, int group,
              const float *u_in, const float *px_in, const float *py_in,
              float *u_out, float *px_out, float *py_out,
              const float *gi, const float *gsq, const float *rc,
              const float *taps, const float *consts) {
    Params k = params(taps, consts);
    size_t plane = (size_t)(ghost_hi(r1, iters, H) - ghost_lo(r0, iters)) * W;
    /* one buffer per thread, kept between calls: no page faults on every round */
    static __thread float *mem = NULL;
    static __thread size_t cap = 0;
    if (cap < 6 * plane) {
        free(mem);
        mem = malloc(6 * plane * sizeof(float));
        cap = mem ? 6 * plane : 0;
        if (!mem) return -1;
    }
    const float *src[3] = {u_in, px_in, py_in};
    float *dst[3] = {u_out, px_out, py_out};
    band_iterate(&k, H, W, r0, r1, iters, group, src, dst, (size_t)H * W, gi, gsq, rc, mem);
    return 0;
}

/* ---- The whole coarse-to-fine solve of one image (`TVNet.solve` + `_tv_l1_level`) ----------
 *
 * Why in C: at batch 1 the ~40 small PyTorch ops of each warp and ~20 of each level cost
 * more in dispatch than the iterations between them. Each building block below repeats the
 * arithmetic of the PyTorch op it replaces, in the same order (ATen's CPU kernels for
 * adaptive average pooling, bilinear upsampling and grid_sample), so the two paths agree to
 * float rounding. Images are (h, w) planes, flows (2, h, w), row-major and contiguous.
 */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* `F.interpolate(mode="area")` = adaptive average pooling: output pixel i averages input
 * [floor(i*in/out), ceil((i+1)*in/out)) in each direction, summed row by row as ATen does
 * (the loops run window row by window row across the whole output row, so that halving
 * and quartering vectorise), then / rows / columns. */
static void area_resize(const float *src, int H, int W, float *dst, int h, int w, int r0, int r1) {
    int xa[w], xb[w]; /* column windows, computed once */
    float cols[w];
    for (int ox = 0; ox < w; ox++) {
        xa[ox] = (int)((long)ox * W / w), xb[ox] = (int)(((long)(ox + 1) * W + w - 1) / w);
        cols[ox] = (float)(xb[ox] - xa[ox]);
    }
    for (int oy = r0; oy < r1; oy++) {
        int y0 = (int)((long)oy * H / h), y1 = (int)(((long)(oy + 1) * H + h - 1) / h);
        float *restrict acc = dst + (size_t)oy * w;
        for (int ox = 0; ox < w; ox++) acc[ox] = 0.0f;
        for (int y = y0; y < y1; y++) {
            const float *restrict row = src + (size_t)y * W;
            if (W == 2 * w) {
                for (int ox = 0; ox < w; ox++) acc[ox] = (acc[ox] + row[2 * ox]) + row[2 * ox + 1];
            } else if (W == 4 * w) {
                for (int ox = 0; ox < w; ox++)
                    acc[ox] = (((acc[ox] + row[4 * ox]) + row[4 * ox + 1]) + row[4 * ox + 2]) + row[4 * ox + 3];
            } else {
                for (int ox = 0; ox < w; ox++) {
                    float sum = acc[ox];
                    for (int x = xa[ox]; x < xb[ox]; x++) sum += row[x];
                    acc[ox] = sum;
                }
            }
        }
        const float rows = (float)(y1 - y0);
        for (int ox = 0; ox < w; ox++) acc[ox] = acc[ox] / rows / cols[ox];
    }
}

/* Source index and weights of one output pixel of a bilinear resize, align_corners=False
 * (ATen's compute_source_index_and_lambda). */
static void linear_tap(int o, int in, int out, int *i0, int *i1, float *l0, float *l1) {
    if (in == out) {
        *i0 = *i1 = o;
        *l0 = 1.0f;
        *l1 = 0.0f;
        return;
    }
    float ratio = (float)in / (float)out;
    float s = ratio * ((float)o + 0.5f) - 0.5f;
    s = s < 0.0f ? 0.0f : s;
    int i = imin((int)floorf(s), in - 1);
    float l = s - (float)i;
    l = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
    *i0 = i;
    *i1 = i + (i < in - 1);
    *l1 = l;
    *l0 = 1.0f - l;
}

/* `F.interpolate(mode="bilinear", align_corners=False)` of one plane. */
static void bilinear_resize(const float *src, int H, int W, float *dst, int h, int w, int r0, int r1) {
    int xa[w], xb[w]; /* column taps, computed once */
    float va[w], vb[w];
    for (int ox = 0; ox < w; ox++) linear_tap(ox, W, w, &xa[ox], &xb[ox], &va[ox], &vb[ox]);
    for (int oy = r0; oy < r1; oy++) {
        int ya, yb;
        float wa, wb;
        linear_tap(oy, H, h, &ya, &yb, &wa, &wb);
        const float *ra = src + (size_t)ya * W, *rb = src + (size_t)yb * W;
        for (int ox = 0; ox < w; ox++)
            dst[(size_t)oy * w + ox] = (ra[xa[ox]] * va[ox] + ra[xb[ox]] * vb[ox]) * wa
                                       + (rb[xa[ox]] * va[ox] + rb[xb[ox]] * vb[ox]) * wb;
    }
}

/* Output rows [r0, r1) of `ops.resize` of one plane: a copy at the same size, area when
 * shrinking, else bilinear. */
static void resize_plane(const float *src, int H, int W, float *dst, int h, int w, int r0, int r1) {
    if (H == h && W == w)
        memcpy(dst + (size_t)r0 * w, src + (size_t)r0 * w, (size_t)(r1 - r0) * w * sizeof(float));
    else if (h <= H && w <= W)
        area_resize(src, H, W, dst, h, w, r0, r1);
    else
        bilinear_resize(src, H, W, dst, h, w, r0, r1);
}

/* Output rows [r0, r1) of `ops.resize_flow`: resize both planes, then u *= w/W and v *= h/H
 * (ratios in double, as Python computes them, applied in float). */
static void resize_flow_rows(int H, int W, const float *src, int h, int w, float *dst, int r0, int r1) {
    size_t n = (size_t)h * w, i0 = (size_t)r0 * w, i1 = (size_t)r1 * w;
    resize_plane(src, H, W, dst, h, w, r0, r1);
    resize_plane(src + (size_t)H * W, H, W, dst + n, h, w, r0, r1);
    if (H == h && W == w) return;
    float sx = (float)((double)w / W), sy = (float)((double)h / H);
    for (size_t i = i0; i < i1; i++) dst[i] *= sx;
    for (size_t i = i0; i < i1; i++) dst[n + i] *= sy;
}

int tvl1_resize_flow(int H, int W, const float *src, int h, int w, float *dst) {
    resize_flow_rows(H, W, src, h, w, dst, 0, h);
    return 0;
}

/* `ops.resize` of one plane (exported for the tests). */
int tvl1_resize(int H, int W, const float *src, int h, int w, float *dst) {
    resize_plane(src, H, W, dst, h, w, 0, h);
    return 0;
}

/* Rows [r0, r1) of `ops.centred_gradient` with taps t (2, 3): "zero" border (replicate = 0)
 * leaves the first and last column (row) at zero, and all of it when the image is 1 or 2
 * wide (high); "replicate" extends the image by its border pixels. */
static void gradient_rows(int h, int w, const float *x, const float *t, int replicate, float *gx, float *gy,
                          int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        const float *row = x + (size_t)r * w;
        float *ox = gx + (size_t)r * w;
        if (replicate) {
            for (int c = 0; c < w; c++)
                ox[c] = (t[0] * row[imax(c - 1, 0)] + t[1] * row[c]) + t[2] * row[imin(c + 1, w - 1)];
        } else if (w <= 2) {
            memset(ox, 0, (size_t)w * sizeof(float));
        } else {
            ox[0] = ox[w - 1] = 0.0f;
            for (int c = 1; c < w - 1; c++) ox[c] = (t[0] * row[c - 1] + t[1] * row[c]) + t[2] * row[c + 1];
        }
    }
    for (int r = r0; r < r1; r++) {
        float *oy = gy + (size_t)r * w;
        if (!replicate && (h <= 2 || r == 0 || r == h - 1)) {
            memset(oy, 0, (size_t)w * sizeof(float));
            continue;
        }
        const float *a = x + (size_t)imax(r - 1, 0) * w, *b = x + (size_t)r * w, *c = x + (size_t)imin(r + 1, h - 1) * w;
        for (int i = 0; i < w; i++) oy[i] = (t[3] * a[i] + t[4] * b[i]) + t[5] * c[i];
    }
}

int tvl1_centred_gradient(int h, int w, const float *x, const float *t, int replicate, float *gx, float *gy) {
    gradient_rows(h, w, x, t, replicate, gx, gy, 0, h);
    return 0;
}

static inline int clamp_index(float v, int n) {
    v = v < 0.0f ? 0.0f : (v > (float)(n - 1) ? (float)(n - 1) : v);
    return (int)v;
}

/* How `ops.warp` reaches grid_sample's pixel coordinates: x -> x * 2 / (w - 1) - 1 -> (. + 1) * (w - 1) / 2. */
typedef struct {
    float nx, ny, sx, sy; /* normalising and un-normalising factors */
    int h, w;
} Grid;

static Grid grid(int h, int w) {
    Grid g = {(float)(2.0 / (w - 1 > 1 ? w - 1 : 1)), (float)(2.0 / (h - 1 > 1 ? h - 1 : 1)),
              (float)(w - 1) / 2.0f, (float)(h - 1) / 2.0f, h, w};
    return g;
}

/* `F.grid_sample(mode="bilinear", padding_mode="border", align_corners=True)` of `np` planes at
 * pixel position (px, py): the position is clamped to the image. */
static inline void sample_bilinear(const float *const *planes, int np, const Grid *g, float px, float py,
                                   float *out) {
    const int h = g->h, w = g->w;
    float X = (px * g->nx - 1.0f + 1.0f) * g->sx;
    float Y = (py * g->ny - 1.0f + 1.0f) * g->sy;
    X = X < 0.0f ? 0.0f : (X > (float)(w - 1) ? (float)(w - 1) : X);
    Y = Y < 0.0f ? 0.0f : (Y > (float)(h - 1) ? (float)(h - 1) : Y);
    float fx = floorf(X), fy = floorf(Y);
    float we = X - fx, wn = Y - fy, ww = 1.0f - we, ws = 1.0f - wn;
    float nw = ws * ww, ne = ws * we, sw = wn * ww, se = wn * we;
    int x0 = (int)fx, y0 = (int)fy, ex = x0 + 1 < w, sy = y0 + 1 < h;
    size_t o = (size_t)y0 * w + x0;
    for (int c = 0; c < np; c++) {
        const float *p = planes[c];
        float vne = ex ? p[o + 1] : 0.0f, vsw = sy ? p[o + w] : 0.0f, vse = ex && sy ? p[o + w + 1] : 0.0f;
        out[c] = ((p[o] * nw + vne * ne) + vsw * sw) + vse * se;
    }
}

typedef float v4 __attribute__((vector_size(16)));

/* The 16 taps of a bicubic sample whose top-left tap is at (fx - 1, fy - 1), with the x weights
 * cx and y weights cy; each tap's index is clamped to the image (ATen's border padding), which
 * only happens near the border. */
static inline v4 cubic_taps(const v4 *st, int h, int w, float fx, float fy, const float *cx, const float *cy) {
    v4 r[4];
    if (fx >= 1.0f && fx <= (float)(w - 3) && fy >= 1.0f && fy <= (float)(h - 3)) { /* no tap clamped */
        const v4 *p = st + (size_t)((int)fy - 1) * w + ((int)fx - 1);
        for (int k = 0; k < 4; k++, p += w)
            r[k] = ((cx[0] * p[0] + cx[1] * p[1]) + cx[2] * p[2]) + cx[3] * p[3];
    } else {
        int xs[4];
        size_t ys[4];
        for (int k = 0; k < 4; k++) {
            xs[k] = clamp_index(fx + (float)(k - 1), w);
            ys[k] = (size_t)clamp_index(fy + (float)(k - 1), h) * w;
        }
        for (int k = 0; k < 4; k++) {
            const v4 *row = st + ys[k];
            r[k] = ((cx[0] * row[xs[0]] + cx[1] * row[xs[1]]) + cx[2] * row[xs[2]]) + cx[3] * row[xs[3]];
        }
    }
    return ((cy[0] * r[0] + cy[1] * r[1]) + cy[2] * r[2]) + cy[3] * r[3];
}

/* The positions (floors) and cubic weights of one row of `sample3_cubic_row`, vectorised
 * (each array its own restrict parameter, so that the compiler sees they do not overlap). */
static void cubic_row_weights(const Grid *g, int y, const float *restrict ux, const float *restrict uy,
                              float *restrict FX, float *restrict FY, float *restrict x0, float *restrict x1,
                              float *restrict x2, float *restrict x3, float *restrict y0, float *restrict y1,
                              float *restrict y2, float *restrict y3) {
    const int w = g->w;
    const float nx = g->nx, ny = g->ny, sx = g->sx, sy = g->sy, A = -0.75f;
    for (int x = 0; x < w; x++) {
        float X = (((float)x + ux[x]) * nx - 1.0f + 1.0f) * sx;
        float Y = (((float)y + uy[x]) * ny - 1.0f + 1.0f) * sy;
        float fx = floorf(X), fy = floorf(Y);
        FX[x] = fx, FY[x] = fy;
        float tx = X - fx, ty = Y - fy; /* cubic convolution weights (A = -0.75) of the taps at -1..2 */
        float vx = tx + 1.0f, vy = ty + 1.0f;
        x0[x] = ((A * vx - 5.0f * A) * vx + 8.0f * A) * vx - 4.0f * A;
        y0[x] = ((A * vy - 5.0f * A) * vy + 8.0f * A) * vy - 4.0f * A;
        vx = tx, vy = ty;
        x1[x] = ((A + 2.0f) * vx - (A + 3.0f)) * vx * vx + 1.0f;
        y1[x] = ((A + 2.0f) * vy - (A + 3.0f)) * vy * vy + 1.0f;
        vx = 1.0f - tx, vy = 1.0f - ty;
        x2[x] = ((A + 2.0f) * vx - (A + 3.0f)) * vx * vx + 1.0f;
        y2[x] = ((A + 2.0f) * vy - (A + 3.0f)) * vy * vy + 1.0f;
        vx = 2.0f - tx, vy = 2.0f - ty;
        x3[x] = ((A * vx - 5.0f * A) * vx + 8.0f * A) * vx - 4.0f * A;
        y3[x] = ((A * vy - 5.0f * A) * vy + 8.0f * A) * vy - 4.0f * A;
    }
}

/* `F.grid_sample(mode="bicubic", padding_mode="border", align_corners=True)` of 3 planes stored
 * interleaved in `st` (h, w, 4: the planes in the lanes of one vector, the 4th unused) at the
 * pixels (x, y) + u of row y: the positions and cubic weights of the whole row first
 * (vectorised across the row), then the 16 taps of each pixel. `wk` holds 10 * w floats.
 * Writes the three planes' row. */
static void sample3_cubic_row(const v4 *st, const Grid *g, int y, const float *ux, const float *uy, float *wk,
                              float *o0, float *o1, float *o2) {
    const int h = g->h, w = g->w;
    float *FX = wk, *FY = wk + w, *x0 = wk + 2 * w, *x1 = wk + 3 * w, *x2 = wk + 4 * w, *x3 = wk + 5 * w,
          *y0 = wk + 6 * w, *y1 = wk + 7 * w, *y2 = wk + 8 * w, *y3 = wk + 9 * w;
    cubic_row_weights(g, y, ux, uy, FX, FY, x0, x1, x2, x3, y0, y1, y2, y3);
    for (int x = 0; x < w; x++) {
        const float cx[4] = {x0[x], x1[x], x2[x], x3[x]}, cy[4] = {y0[x], y1[x], y2[x], y3[x]};
        v4 v = cubic_taps(st, h, w, FX[x], FY[x], cx, cy);
        o0[x] = v[0], o1[x] = v[1], o2[x] = v[2];
    }
}

/* `ops.warp` of `np` planes (np, h, w) by the flow u (2, h, w), with the samplers the solve
 * uses (exported for the tests): bilinear np <= 4, bicubic np == 3. -1: other np, no memory. */
int tvl1_warp(int h, int w, int np, const float *src, const float *u, int bilinear, float *dst) {
    size_t n = (size_t)h * w;
    Grid g = grid(h, w);
    if (!bilinear) {
        v4 *st = np == 3 ? malloc(n * sizeof *st) : NULL;
        float *wk = st ? malloc(10 * (size_t)w * sizeof *wk) : NULL;
        if (!wk) {
            free(st);
            return -1;
        }
        for (size_t i = 0; i < n; i++) st[i] = (v4){src[i], src[n + i], src[2 * n + i], 0.0f};
        for (int y = 0; y < h; y++) {
            size_t o = (size_t)y * w;
            sample3_cubic_row(st, &g, y, u + o, u + n + o, wk, dst + o, dst + n + o, dst + 2 * n + o);
        }
        free(wk);
        free(st);
        return 0;
    }
    const float *planes[4];
    float v[4];
    if (np > 4) return -1;
    for (int c = 0; c < np; c++) planes[c] = src + c * n;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t o = (size_t)y * w + x;
            sample_bilinear(planes, np, &g, (float)x + u[o], (float)y + u[n + o], v);
            for (int c = 0; c < np; c++) dst[c * n + o] = v[c];
        }
    return 0;
}

enum { REPLICATE = 1, DATA_BORDER = 2, BILINEAR = 4, U_IS_ZERO = 8, BIAS = 16 };
#define MEDIAN_SHIFT 8 /* flags >> 8: the side k of the median filter after every warp (0 = off) */

/* The k-th smallest of a[0..n-1] (n > 0), reordering a: Hoare's selection. */
static float select_kth(float *a, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j], a[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return a[k];
}

/* The median of the brightness shift in two steps, so that row bands can share it: a
 * histogram of each band's values by the top KEY_BITS of their order-preserving keys, the
 * bin that holds the k-th smallest of all, then a selection among that bin's values only.
 * The value is the k-th smallest whatever the bands (-0 sorts below +0). */
#define KEY_BITS 12
#define BINS (1 << KEY_BITS)

static inline uint32_t key_bin(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (b & 0x80000000u ? ~b : b | 0x80000000u) >> (32 - KEY_BITS);
}

static void key_histogram(const float *a, size_t m, uint32_t *hist) {
    memset(hist, 0, BINS * sizeof *hist);
    for (size_t i = 0; i < m; i++) hist[key_bin(a[i])]++;
}

/* The bin of the k-th smallest of the nh histograms' values, and its rank in that bin. */
static uint32_t kth_bin(uint32_t *const *hists, int nh, size_t k, size_t *rank) {
    size_t below = 0;
    for (uint32_t b = 0; b < BINS; b++) {
        size_t c = 0;
        for (int j = 0; j < nh; j++) c += hists[j][b];
        if (k < below + c) {
            *rank = k - below;
            return b;
        }
        below += c;
    }
    *rank = 0;
    return BINS; /* k beyond the counts: not reached */
}

/* Moves the values of a[0..m) that fall in bin b to the front; returns how many. */
static size_t keep_bin(float *a, size_t m, uint32_t b) {
    size_t c = 0;
    for (size_t i = 0; i < m; i++)
        if (key_bin(a[i]) == b) a[c++] = a[i];
    return c;
}

#define LEVEL_INTS 4    /* h, w, warps, iters */
#define LEVEL_FLOATS 18 /* centred taps (6), forward (4), backward (4), consts (4) */


/* One warp of `_tv_l1_level` on an (h, w) level, in three passes over rows [r0, r1) so that
 * row bands of a level can run on threads: warp i1, ix, iy by u (or not: `identity`); with
 * `bias`, shift the warped i1 by the median of (i0 - it) over the pixels that stay inside
 * (`ops.median_offset`); blank the data term where x + u leaves the image (unless `border`);
 * then grad_i, grad_sq and rho_c. */
typedef struct {
    int h, w, identity, border, bilinear;
    float eps;
    const float *i0, *const *stack; /* frame 0; frame 1 and its gradients (3 planes) */
    const v4 *inter;                /* the same three interleaved (bicubic only) */
    const float *u;                 /* (2, h, w) */
    float *gi, *gsq, *rc;
    float *wk;                      /* this thread's 10 * w floats for the bicubic rows */
} Warp;

static inline int stays_inside(const Warp *d, int x, int y, size_t o) {
    const float lo = -0.5f, hix = (float)(d->w - 1) + 0.5f, hiy = (float)(d->h - 1) + 0.5f;
    float px = (float)x + d->u[o], py = (float)y + d->u[(size_t)d->h * d->w + o];
    return px >= lo && px <= hix && py >= lo && py <= hiy;
}

/* Pass 1: the warped values, i1 into rc (for now) and the gradients into gi. */
static void warp_values(const Warp *d, int r0, int r1) {
    const int w = d->w;
    size_t n = (size_t)d->h * w;
    Grid g = grid(d->h, w);
    if (!d->identity && !d->bilinear) {
        for (int y = r0; y < r1; y++) {
            size_t o = (size_t)y * w;
            sample3_cubic_row(d->inter, &g, y, d->u + o, d->u + n + o, d->wk, d->rc + o, d->gi + o, d->gi + n + o);
        }
        return;
    }
    for (int y = r0; y < r1; y++)
        for (int x = 0; x < w; x++) {
            size_t o = (size_t)y * w + x;
            float v[3];
            if (d->identity)
                v[0] = d->stack[0][o], v[1] = d->stack[1][o], v[2] = d->stack[2][o];
            else
                sample_bilinear(d->stack, 3, &g, (float)x + d->u[o], (float)y + d->u[n + o], v);
            d->rc[o] = v[0], d->gi[o] = v[1], d->gi[n + o] = v[2];
        }
}

/* Pass 2 (brightness bias): i0 - warped i1 at the pixels that stay inside, in row-major
 * order, into `out`; returns how many. */
static size_t warp_diffs(const Warp *d, int r0, int r1, float *out) {
    size_t m = 0;
    for (int y = r0; y < r1; y++)
        for (int x = 0; x < d->w; x++) {
            size_t o = (size_t)y * d->w + x;
            if (d->identity || stays_inside(d, x, y, o)) out[m++] = d->i0[o] - d->rc[o];
        }
    return m;
}

/* Pass 3: shift, mask, grad_i, grad_sq and rho_c. */
static void warp_finish(const Warp *d, int bias, float shift, int r0, int r1) {
    const int w = d->w;
    size_t n = (size_t)d->h * w;
    for (int y = r0; y < r1; y++)
        for (int x = 0; x < w; x++) {
            size_t o = (size_t)y * w + x;
            float u1 = d->u[o], u2 = d->u[n + o], v0 = d->rc[o], v1 = d->gi[o], v2 = d->gi[n + o];
            if (bias) v0 = v0 + shift;
            if (!d->identity && !d->border && !stays_inside(d, x, y, o)) v0 = d->i0[o], v1 = 0.0f, v2 = 0.0f;
            d->gi[o] = v1;
            d->gi[n + o] = v2;
            d->gsq[o] = (v1 * v1 + v2 * v2) + d->eps;
            d->rc[o] = (v0 - (v1 * u1 + v2 * u2)) - d->i0[o];
        }
}

/* ---- The k x k median of the flow after every warp (`ops.median_filter`) ------------------
 * A sorting network: Batcher's odd-even merge sort of the k*k window values, padded with
 * +FLT_MAX to a power of two, cut to the comparators that the middle output depends on. It
 * runs on a chunk of a row at once, as min/max over arrays, which the compiler vectorises. */
#define MED_WIRES 64 /* k <= 7 */
#define MED_NET 600  /* Batcher's network on 64 wires has 543 comparators */
#define MED_CHUNK 256

typedef float v8f __attribute__((vector_size(32), aligned(4))); /* unaligned: any float offset */
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

typedef struct {
    int k, wires, mid, len;
    unsigned char a[MED_NET], b[MED_NET]; /* comparator c: a[c] <- min, b[c] <- max */
} MedNet;

static void median_network(int k, MedNet *net) {
    int cnt = k * k, n = 1, len = 0;
    while (n < cnt) n <<= 1;
    unsigned char ca[MED_NET], cb[MED_NET], inf[MED_WIRES], need[MED_WIRES], keep[MED_NET];
    for (int p = 1; p < n; p <<= 1)
        for (int q = p; q >= 1; q >>= 1)
            for (int j = q % p; j + q < n; j += 2 * q)
                for (int i = 0; i < q && i + j + q < n; i++)
                    if ((i + j) / (2 * p) == (i + j + q) / (2 * p)) ca[len] = i + j, cb[len++] = i + j + q;
    for (int w = 0; w < n; w++) inf[w] = w >= cnt, need[w] = w == (cnt - 1) / 2;
    for (int c = 0; c < len; c++) { /* forward: a max with a padding wire changes nothing */
        keep[c] = !inf[cb[c]];
        if (keep[c] && inf[ca[c]]) inf[ca[c]] = 0, inf[cb[c]] = 1;
    }
    for (int c = len - 1; c >= 0; c--) { /* backward: only what the middle wire depends on */
        keep[c] = keep[c] && (need[ca[c]] || need[cb[c]]);
        if (keep[c]) need[ca[c]] = need[cb[c]] = 1;
    }
    net->k = k, net->wires = n, net->mid = (cnt - 1) / 2, net->len = 0;
    for (int c = 0; c < len; c++)
        if (keep[c]) net->a[net->len] = ca[c], net->b[net->len++] = cb[c];
}

/* Rows [r0, r1) of the k x k median (replicated border) of both planes of u (2, h, w) into
 * out; wk: MED_WIRES * MED_CHUNK floats. */
static void median_rows(const MedNet *net, int h, int w, const float *u, float *out, int r0, int r1, float *wk) {
    const int k = net->k, r = k / 2;
    for (int ch = 0; ch < 2; ch++)
        for (int y = r0; y < r1; y++)
            for (int x0 = 0; x0 < w; x0 += MED_CHUNK) {
                const int nx = w - x0 < MED_CHUNK ? w - x0 : MED_CHUNK, nv = (nx + 7) & ~7; /* nv: whole lanes */
                for (int dy = 0; dy < k; dy++) {
                    int yy = y + dy - r;
                    const float *row = u + (size_t)ch * h * w + (size_t)(yy < 0 ? 0 : yy >= h ? h - 1 : yy) * w;
                    for (int dx = 0; dx < k; dx++) { /* row[x0 + x + dx - r], x clamped to the row */
                        float *wire = wk + (size_t)(dy * k + dx) * MED_CHUNK;
                        const int off = x0 + dx - r, lo = imin(imax(-off, 0), nv), hi = imax(imin(w - off, nv), lo);
                        for (int x = 0; x < lo; x++) wire[x] = row[0];
                        memcpy(wire + lo, row + off + lo, (size_t)(hi - lo) * sizeof(float));
                        for (int x = hi; x < nv; x++) wire[x] = row[w - 1]; /* lanes past nx: any value */
                    }
                }
                for (int v = k * k; v < net->wires; v++)
                    for (int x = 0; x < nv; x++) wk[(size_t)v * MED_CHUNK + x] = FLT_MAX;
                for (int c = 0; c < net->len; c++) { /* 8 lanes at a time: min/max as bit blends */
                    v8f *pa = (v8f *)(wk + (size_t)net->a[c] * MED_CHUNK), *pb = (v8f *)(wk + (size_t)net->b[c] * MED_CHUNK);
                    for (int x = 0; x < nv / 8; x++) {
                        v8f va = pa[x], vb = pb[x];
#ifdef __AVX__
                        pa[x] = (v8f)_mm256_min_ps((__m256)va, (__m256)vb);
                        pb[x] = (v8f)_mm256_max_ps((__m256)va, (__m256)vb);
#else
                        v8i lt = (v8i)(va < vb), ia = (v8i)va, ib = (v8i)vb;
                        pa[x] = (v8f)((lt & ia) | (~lt & ib));
                        pb[x] = (v8f)((lt & ib) | (~lt & ia));
#endif
                    }
                }
                memcpy(out + (size_t)ch * h * w + (size_t)y * w + x0, wk + (size_t)net->mid * MED_CHUNK, nx * sizeof(float));
            }
}

/* `ops.median_filter` of u (2, h, w) into out (exported for the tests); k odd, 3..7. */
int tvl1_median(int h, int w, int k, const float *u, float *out) {
    MedNet net;
    float *wk = malloc(MED_WIRES * MED_CHUNK * sizeof(float));
    if (!wk) return -1;
    median_network(k, &net);
    median_rows(&net, h, w, u, out, 0, h, wk);
    free(wk);
    return 0;
}

/* ---- One image's solve on `nt` threads -------------------------------------------------
 *
 * Levels of at least `min_band_pixels` are cut into nt row bands, one per thread: resizes,
 * gradient and warps by rows; the median of the brightness shift from the bands' histograms
 * and the candidates of its bin (the same value as one thread's); the iterations in rounds of at
 * most ROUND, each band on a private copy with ghost rows, from one state buffer into the
 * other (so every value is the one whole-image iterations give). Smaller levels run on
 * thread 0 alone while the others wait: a barrier costs more than their work. Threads wait
 * in pthread barriers (futexes), never spinning, so a busy machine loses no core to them. */
static int min_band_pixels = 8192; /* see tvl1_band_threshold */
/* Back-off on a busy machine: when a threaded solve takes longer than its threads' CPU time
 * together, its threads waited for cores more than they shared work (each barrier waits for
 * a descheduled thread), and one thread would have been faster. After STRIKES such solves
 * in a row, the next `backoff_calls` solves (of any caller) run on one thread, and the one
 * after that tries threads again (one slow try sends it back). */
#define STRIKES 3
static int backoff_calls = 64;
static int backoff_left = 0, strikes = 0; /* atomic */

static double seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define ROUND 16 /* iterations per round of bands: ghost rows = ROUND + 2 on each inner side */
#define MAX_THREADS 16

typedef struct {
    int H, W, levels, flags, group, nt, min_px;
    const float *i0, *i1;
    const int *shape;
    const float *par;
    float *S[2][3];           /* two state sets (u, px, py), each (2, h, w) */
    float *l0, *l1, *gx, *gy, *gi, *gsq, *rc, *diffs;
    v4 *inter;                /* i1, ix, iy interleaved for the bicubic warp */
    float *band[MAX_THREADS]; /* each thread's copy of its band with ghost rows */
    float *pick[MAX_THREADS]; /* each thread's copy of the median's candidates */
    float *rowk[MAX_THREADS]; /* each thread's workspace of the bicubic rows (10 x the widest level) */
    float *medw[MAX_THREADS]; /* each thread's median workspace (MED_WIRES x MED_CHUNK) */
    MedNet med;               /* the median's network (med.k = 0: no median) */
    uint32_t *hist[MAX_THREADS];
    size_t count[MAX_THREADS], kept[MAX_THREADS];
    double cpu[MAX_THREADS]; /* each thread's CPU seconds in solve_levels */
    pthread_barrier_t bar;
    pthread_mutex_t gate_lock; /* workers wait for the gate until `nt` is final */
    pthread_cond_t gate_cond;
    int gate;
} Solve;

/* Bands of an (h, w) level: nt, or 1 when it is too small to share. */
static int bands_of(int nt, int min_px, int h, int w) {
    return nt > 1 && (size_t)h * w >= (size_t)min_px && h >= nt ? nt : 1;
}

/* Sets how many solves run on one thread after a threaded one was slowed by a busy machine
 * (0: never back off), when `calls` >= 0; returns the setting before (the tests turn it off
 * so that their threaded solves do run on threads). */
int tvl1_thread_backoff(int calls) {
    int old = backoff_calls;
    if (calls >= 0) {
        backoff_calls = calls;
        __atomic_store_n(&backoff_left, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&strikes, 0, __ATOMIC_RELAXED);
    }
    return old;
}

/* Sets the smallest level (pixels) that is cut into bands, when `px` > 0; returns the
 * setting before (the tests band every level to check the band edges on small images). */
int tvl1_band_threshold(int px) {
    int old = min_band_pixels;
    if (px > 0) min_band_pixels = px;
    return old;
}

static inline int edge(int k, int nb, int h) { return (int)((long)k * h / nb); }

static inline void sync_bands(Solve *s, int nb) {
    if (nb > 1) pthread_barrier_wait(&s->bar);
}

/* The levels as thread t runs them; returns which state set holds the final flow. */
static int solve_levels(Solve *s, int t) {
    double cpu0 = seconds(CLOCK_THREAD_CPUTIME_ID);
    int c = 0, ph = s->shape[0], pw = s->shape[1], prev_nb = 1;
    for (int l = 0; l < s->levels; l++) {
        const int *sh = s->shape + l * LEVEL_INTS;
        const float *p = s->par + l * LEVEL_FLOATS;
        const int h = sh[0], w = sh[1], warps = sh[2], iters = sh[3], flags = s->flags;
        const int nb = bands_of(s->nt, s->min_px, h, w), resized = h != ph || w != pw, qh = ph, qw = pw;
        const size_t n = (size_t)h * w;
        ph = h, pw = w;
        if (t >= nb) { /* thread 0 runs this level alone: only follow its state set */
            c ^= resized;
            prev_nb = nb;
            continue;
        }
        if (nb > 1 && prev_nb == 1 && l > 0) sync_bands(s, nb); /* thread 0's previous level is done */
        prev_nb = nb;
        const int r0 = edge(t, nb, h), r1 = edge(t + 1, nb, h);
        const size_t o0 = (size_t)r0 * w, rows = (size_t)(r1 - r0) * w;
        if (resized) {
            resize_flow_rows(qh, qw, s->S[c][0], h, w, s->S[c ^ 1][0], r0, r1);
            c ^= 1;
        }
        const float *a = s->i0, *b = s->i1;
        if (h != s->H || w != s->W) {
            resize_plane(s->i0, s->H, s->W, s->l0, h, w, r0, r1);
            resize_plane(s->i1, s->H, s->W, s->l1, h, w, r0, r1);
            a = s->l0, b = s->l1;
        }
        for (int ch = 0; ch < 2; ch++) {
            memset(s->S[c][1] + ch * n + o0, 0, rows * sizeof(float));
            memset(s->S[c][2] + ch * n + o0, 0, rows * sizeof(float));
        }
        sync_bands(s, nb); /* the gradient reads the rows around the band */
        gradient_rows(h, w, b, p, flags & REPLICATE, s->gx, s->gy, r0, r1);
        if (!(flags & BILINEAR))
            for (size_t i = o0; i < o0 + rows; i++) s->inter[i] = (v4){b[i], s->gx[i], s->gy[i], 0.0f};
        sync_bands(s, nb); /* the warp reads anywhere */
        Params k = params(p + 6, p + 14);
        const float *stack[3] = {b, s->gx, s->gy};
        const int bias = flags & BIAS;
        for (int warp = 0; warp < warps; warp++) {
            Warp d = {h, w, l == 0 && warp == 0 && (flags & U_IS_ZERO), flags & DATA_BORDER, flags & BILINEAR,
                      p[17], a, stack, s->inter, s->S[c][0], s->gi, s->gsq, s->rc, s->rowk[t]};
            warp_values(&d, r0, r1);
            float shift = 0.0f;
            if (bias) { /* the lower middle, as torch: the ((m - 1) / 2)-th smallest */
                float *own = s->diffs + o0;
                size_t m = warp_diffs(&d, r0, r1, own), rank = 0;
                key_histogram(own, m, s->hist[t]);
                s->count[t] = m;
                sync_bands(s, nb); /* every band's histogram */
                m = 0;
                for (int j = 0; j < nb; j++) m += s->count[j];
                uint32_t bin = m ? kth_bin(s->hist, nb, (m - 1) / 2, &rank) : 0;
                s->kept[t] = m ? keep_bin(own, s->count[t], bin) : 0;
                if (nb == 1) {
                    shift = s->kept[0] ? select_kth(own, s->kept[0], rank) : 0.0f;
                } else {
                    sync_bands(s, nb); /* every band's candidates */
                    size_t c = 0;
                    for (int j = 0; j < nb; j++) {
                        memcpy(s->pick[t] + c, s->diffs + (size_t)edge(j, nb, h) * w, s->kept[j] * sizeof(float));
                        c += s->kept[j];
                    }
                    shift = c ? select_kth(s->pick[t], c, rank) : 0.0f;
                }
            }
            warp_finish(&d, bias, shift, r0, r1);
            if (nb == 1) {
                Buf buf = {s->S[c][0], s->S[c][1], s->S[c][2], s->gi, s->gsq, s->rc, n, n, h, w};
                run(&k, &buf, iters, s->group);
                if (s->med.k) { /* into gi (free until the next warp), then back */
                    median_rows(&s->med, h, w, s->S[c][0], s->gi, 0, h, s->medw[t]);
                    memcpy(s->S[c][0], s->gi, 2 * n * sizeof(float));
                }
                continue;
            }
            /* the bands read the data term of their ghost rows; the next warp's differences
             * overwrite candidates that other threads copy */
            if (iters > 0 || bias) sync_bands(s, nb);
            int rounds = (iters + ROUND - 1) / ROUND;
            for (int r = 0, done = 0; r < rounds; r++) {
                int m = (iters - done) / (rounds - r); /* even rounds of at most ROUND */
                const float *src[3] = {s->S[c][0], s->S[c][1], s->S[c][2]};
                float *dst[3] = {s->S[c ^ 1][0], s->S[c ^ 1][1], s->S[c ^ 1][2]};
                band_iterate(&k, h, w, r0, r1, m, s->group, src, dst, n, s->gi, s->gsq, s->rc, s->band[t]);
                sync_bands(s, nb);
                c ^= 1, done += m;
            }
            if (s->med.k) { /* the band's rows into gi; back once every band has read u */
                median_rows(&s->med, h, w, s->S[c][0], s->gi, r0, r1, s->medw[t]);
                sync_bands(s, nb);
                for (int ch = 0; ch < 2; ch++)
                    memcpy(s->S[c][0] + ch * n + o0, s->gi + ch * n + o0, rows * sizeof(float));
                sync_bands(s, nb);
            }
        }
        if (nb > 1 && (warps == 0 || iters == 0)) sync_bands(s, nb); /* no round ended the level */
    }
    s->cpu[t] = seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    return c;
}

typedef struct {
    Solve *s;
    int t;
} Worker;

static void *worker(void *arg) {
    Worker *wk = arg;
    Solve *s = wk->s;
    pthread_mutex_lock(&s->gate_lock);
    while (!s->gate) pthread_cond_wait(&s->gate_cond, &s->gate_lock);
    pthread_mutex_unlock(&s->gate_lock);
    if (wk->t < s->nt) solve_levels(s, wk->t);
    return NULL;
}

/* The whole solve of one image on `threads` threads (1: this one only): levels coarsest
 * first, `shape` (levels, 4) = h, w, warps, iters; `par` (levels, 18) = centred (2, 3),
 * forward (2, 2), backward (2, 2) taps, then lambda*theta, theta, tau/theta, eps. i0, i1
 * (H, W) prepared grey frames; u_init (2, h, w) at the first level; out (2, h, w) at the
 * last. The frames of each level are area averages of the full frames; the flow goes from
 * level to level by `ops.resize_flow`. The result does not depend on `threads`.
 * Returns 0, or -1 when out of memory. */
int tvl1_solve(int H, int W, const float *i0, const float *i1, const float *u_init, int levels,
               const int *shape, const float *par, int flags, int group, int threads, float *out) {
    int nt = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads), banded = 0, min_px = min_band_pixels;
    size_t big = 1, band = 0, wide = 1;
    for (int l = 0; l < levels; l++) {
        int h = shape[l * LEVEL_INTS], w = shape[l * LEVEL_INTS + 1];
        size_t n = (size_t)h * w;
        big = n > big ? n : big;
        wide = (size_t)w > wide ? (size_t)w : wide;
        if (bands_of(nt, min_px, h, w) > 1) {
            size_t rows = (size_t)imin(h, (h + nt - 1) / nt + 2 * (ROUND + 2));
            band = 6 * rows * w > band ? 6 * rows * w : band;
            banded = 1;
        }
    }
    if (!banded) nt = 1;
    if (nt > 1 && __atomic_load_n(&backoff_left, __ATOMIC_RELAXED) > 0) { /* a busy machine lately */
        __atomic_fetch_sub(&backoff_left, 1, __ATOMIC_RELAXED);
        nt = 1;
    }
    const int med = (flags >> MEDIAN_SHIFT) & 0xff;
    size_t total = (nt > 1 ? 25 + nt : 21) * big + nt * (band + 10 * wide) /* floats; band copies only when banded */
                   + (med ? (size_t)nt * MED_WIRES * MED_CHUNK : 0);
    void *block = NULL;
    if (posix_memalign(&block, 64, total * sizeof(float)) != 0) return -1;
    float *mem = block;
    Solve s = {.H = H, .W = W, .levels = levels, .flags = flags, .group = group, .nt = nt, .min_px = min_px, .i0 = i0, .i1 = i1,
               .shape = shape, .par = par};
    float *m = mem;
    s.inter = (v4 *)m, m += 4 * big; /* first: 16-byte aligned */
    for (int c = 0; c < 2; c++)
        for (int v = 0; v < 3; v++)
            if (c == 0 || v == 0 || nt > 1) s.S[c][v] = m, m += 2 * big;
            else s.S[1][v] = s.S[0][v]; /* one thread iterates in place: one p for both */
    s.l0 = m, m += big;
    s.l1 = m, m += big;
    s.gx = m, m += big;
    s.gy = m, m += big;
    s.gi = m, m += 2 * big;
    s.gsq = m, m += big;
    s.rc = m, m += big;
    s.diffs = m, m += big;
    for (int t = 0; t < nt; t++) s.band[t] = m, m += band;
    for (int t = 0; t < nt && nt > 1; t++) s.pick[t] = m, m += big;
    for (int t = 0; t < nt; t++) s.rowk[t] = m, m += 10 * wide;
    for (int t = 0; t < nt && med; t++) s.medw[t] = m, m += MED_WIRES * MED_CHUNK;
    s.med.k = 0;
    if (med) median_network(med, &s.med);
    uint32_t *hist = (flags & BIAS) ? malloc((size_t)nt * BINS * sizeof *hist) : NULL;
    if ((flags & BIAS) && !hist) {
        free(mem);
        return -1;
    }
    for (int t = 0; t < nt; t++) s.hist[t] = hist ? hist + (size_t)t * BINS : NULL;
    memcpy(s.S[0][0], u_init, 2 * (size_t)shape[0] * shape[1] * sizeof(float));
    if (nt == 1) {
        int c = solve_levels(&s, 0);
        memcpy(out, s.S[c][0], 2 * (size_t)shape[(levels - 1) * LEVEL_INTS] * shape[(levels - 1) * LEVEL_INTS + 1] * sizeof(float));
        free(hist);
        free(mem);
        return 0;
    }
    double wall0 = seconds(CLOCK_MONOTONIC);
    pthread_t tid[MAX_THREADS];
    Worker wk[MAX_THREADS];
    pthread_mutex_init(&s.gate_lock, NULL);
    pthread_cond_init(&s.gate_cond, NULL);
    s.gate = 0;
    int made = 1; /* threads running, this one included */
    for (int t = 1; t < nt; t++, made++) {
        wk[t] = (Worker){&s, t};
        if (pthread_create(&tid[t], NULL, worker, &wk[t]) != 0) break;
    }
    if (made < nt) s.nt = 1; /* a thread could not be created: this one does it all (same result) */
    if (s.nt > 1) pthread_barrier_init(&s.bar, NULL, (unsigned)nt);
    pthread_mutex_lock(&s.gate_lock);
    s.gate = 1;
    pthread_cond_broadcast(&s.gate_cond);
    pthread_mutex_unlock(&s.gate_lock);
    int c = solve_levels(&s, 0);
    for (int t = 1; t < made; t++) pthread_join(tid[t], NULL);
    if (s.nt > 1) {
        double cpu = 0.0, wall = seconds(CLOCK_MONOTONIC) - wall0;
        for (int t = 0; t < s.nt; t++) cpu += s.cpu[t];
        if (wall <= cpu)
            __atomic_store_n(&strikes, 0, __ATOMIC_RELAXED);
        else if (__atomic_add_fetch(&strikes, 1, __ATOMIC_RELAXED) >= STRIKES)
            __atomic_store_n(&backoff_left, backoff_calls, __ATOMIC_RELAXED);
    }
    if (s.nt > 1) pthread_barrier_destroy(&s.bar);
    pthread_mutex_destroy(&s.gate_lock);
    pthread_cond_destroy(&s.gate_cond);
    const int *last = shape + (levels - 1) * LEVEL_INTS;
    memcpy(out, s.S[c][0], 2 * (size_t)last[0] * last[1] * sizeof(float));
    free(hist);
    free(mem);
    return 0;
}
