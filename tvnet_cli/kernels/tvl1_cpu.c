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
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

/* `iters` iterations for rows [r0, r1) of an image: reads state from *_in, writes those rows
 * of *_out (other rows untouched). Works on a private copy with iters + 2 ghost rows on each
 * side. Returns 0, or -1 when out of memory. */
int tvl1_band(int H, int W, int r0, int r1, int iters, int group,
              const float *u_in, const float *px_in, const float *py_in,
              float *u_out, float *px_out, float *py_out,
              const float *gi, const float *gsq, const float *rc,
              const float *taps, const float *consts) {
    Params k = params(taps, consts);
    int a = r0 - iters - 2 < 0 ? 0 : r0 - iters - 2;
    int e = r1 + iters + 2 > H ? H : r1 + iters + 2;
    size_t n = (size_t)(e - a), plane = n * W, img = (size_t)H * W;
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
    for (int v = 0; v < 3; v++)
        for (int c = 0; c < 2; c++)
            memcpy(mem + (2 * v + c) * plane, src[v] + c * img + (size_t)a * W, plane * sizeof(float));
    size_t off = (size_t)a * W;
    Buf b = {mem, mem + 2 * plane, mem + 4 * plane, gi + off, gsq + off, rc + off, plane, img, (int)n, W};
    run(&k, &b, iters, group);
    for (int v = 0; v < 3; v++)
        for (int c = 0; c < 2; c++)
            memcpy(dst[v] + c * img + (size_t)r0 * W, mem + (2 * v + c) * plane + (size_t)(r0 - a) * W,
                   (size_t)(r1 - r0) * W * sizeof(float));
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
 * [floor(i*in/out), ceil((i+1)*in/out)) in each direction, summed row by row. */
static void area_resize(const float *src, int H, int W, float *dst, int h, int w) {
    int xa[w], xb[w]; /* column windows, computed once */
    for (int ox = 0; ox < w; ox++)
        xa[ox] = (int)((long)ox * W / w), xb[ox] = (int)(((long)(ox + 1) * W + w - 1) / w);
    for (int oy = 0; oy < h; oy++) {
        int y0 = (int)((long)oy * H / h), y1 = (int)(((long)(oy + 1) * H + h - 1) / h);
        for (int ox = 0; ox < w; ox++) {
            int x0 = xa[ox], x1 = xb[ox];
            float sum = 0.0f;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) sum += src[(size_t)y * W + x];
            dst[(size_t)oy * w + ox] = sum / (float)(y1 - y0) / (float)(x1 - x0);
        }
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
static void bilinear_resize(const float *src, int H, int W, float *dst, int h, int w) {
    int xa[w], xb[w]; /* column taps, computed once */
    float va[w], vb[w];
    for (int ox = 0; ox < w; ox++) linear_tap(ox, W, w, &xa[ox], &xb[ox], &va[ox], &vb[ox]);
    for (int oy = 0; oy < h; oy++) {
        int ya, yb;
        float wa, wb;
        linear_tap(oy, H, h, &ya, &yb, &wa, &wb);
        const float *ra = src + (size_t)ya * W, *rb = src + (size_t)yb * W;
        for (int ox = 0; ox < w; ox++)
            dst[(size_t)oy * w + ox] = (ra[xa[ox]] * va[ox] + ra[xb[ox]] * vb[ox]) * wa
                                       + (rb[xa[ox]] * va[ox] + rb[xb[ox]] * vb[ox]) * wb;
    }
}

/* `ops.resize` of one plane: a copy at the same size, area when shrinking, else bilinear. */
static void resize_plane(const float *src, int H, int W, float *dst, int h, int w) {
    if (H == h && W == w)
        memcpy(dst, src, (size_t)h * w * sizeof(float));
    else if (h <= H && w <= W)
        area_resize(src, H, W, dst, h, w);
    else
        bilinear_resize(src, H, W, dst, h, w);
}

/* `ops.resize_flow`: resize both planes, then u *= w/W and v *= h/H (ratios in double, as
 * Python computes them, applied in float). */
int tvl1_resize_flow(int H, int W, const float *src, int h, int w, float *dst) {
    size_t n = (size_t)h * w;
    resize_plane(src, H, W, dst, h, w);
    resize_plane(src + (size_t)H * W, H, W, dst + n, h, w);
    if (H == h && W == w) return 0;
    float sx = (float)((double)w / W), sy = (float)((double)h / H);
    for (size_t i = 0; i < n; i++) dst[i] *= sx;
    for (size_t i = 0; i < n; i++) dst[n + i] *= sy;
    return 0;
}

/* `ops.resize` of one plane (exported for the tests). */
int tvl1_resize(int H, int W, const float *src, int h, int w, float *dst) {
    resize_plane(src, H, W, dst, h, w);
    return 0;
}

/* `ops.centred_gradient` with taps t (2, 3): "zero" border (replicate = 0) leaves the first
 * and last column (row) at zero, and all of it when the image is 1 or 2 wide (high);
 * "replicate" extends the image by its border pixels. */
int tvl1_centred_gradient(int h, int w, const float *x, const float *t, int replicate, float *gx, float *gy) {
    for (int r = 0; r < h; r++) {
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
    for (int r = 0; r < h; r++) {
        float *oy = gy + (size_t)r * w;
        if (!replicate && (h <= 2 || r == 0 || r == h - 1)) {
            memset(oy, 0, (size_t)w * sizeof(float));
            continue;
        }
        const float *a = x + (size_t)imax(r - 1, 0) * w, *b = x + (size_t)r * w, *c = x + (size_t)imin(r + 1, h - 1) * w;
        for (int i = 0; i < w; i++) oy[i] = (t[3] * a[i] + t[4] * b[i]) + t[5] * c[i];
    }
    return 0;
}

/* The cubic convolution weights of the taps at -1, 0, 1, 2 for a fraction t (A = -0.75). */
static inline void cubic_weights(float t, float c[4]) {
    const float A = -0.75f;
    float x = t + 1.0f;
    c[0] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
    x = t;
    c[1] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 1.0f - t;
    c[2] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 2.0f - t;
    c[3] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
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

/* `F.grid_sample(padding_mode="border", align_corners=True)` of `np` planes at pixel position
 * (px, py). Bicubic clamps each of its 16 taps to the image (not the position); bilinear
 * clamps the position. */
static inline void sample(const float *const *planes, int np, const Grid *g, float px, float py,
                          int bilinear, float *out) {
    const int h = g->h, w = g->w;
    float X = (px * g->nx - 1.0f + 1.0f) * g->sx;
    float Y = (py * g->ny - 1.0f + 1.0f) * g->sy;
    if (bilinear) {
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
        return;
    }
    float fx = floorf(X), fy = floorf(Y), cx[4], cy[4];
    cubic_weights(X - fx, cx);
    cubic_weights(Y - fy, cy);
    if (fx >= 1.0f && fx <= (float)(w - 3) && fy >= 1.0f && fy <= (float)(h - 3)) { /* no tap clamped */
        size_t o = (size_t)((int)fy - 1) * w + ((int)fx - 1);
        for (int c = 0; c < np; c++) {
            const float *p = planes[c] + o;
            float r[4];
            for (int k = 0; k < 4; k++, p += w)
                r[k] = ((cx[0] * p[0] + cx[1] * p[1]) + cx[2] * p[2]) + cx[3] * p[3];
            out[c] = ((cy[0] * r[0] + cy[1] * r[1]) + cy[2] * r[2]) + cy[3] * r[3];
        }
        return;
    }
    int xs[4];
    size_t ys[4];
    for (int k = 0; k < 4; k++) {
        xs[k] = clamp_index(fx + (float)(k - 1), w);
        ys[k] = (size_t)clamp_index(fy + (float)(k - 1), h) * w;
    }
    for (int c = 0; c < np; c++) {
        const float *p = planes[c];
        float r[4];
        for (int k = 0; k < 4; k++) {
            const float *row = p + ys[k];
            r[k] = ((cx[0] * row[xs[0]] + cx[1] * row[xs[1]]) + cx[2] * row[xs[2]]) + cx[3] * row[xs[3]];
        }
        out[c] = ((cy[0] * r[0] + cy[1] * r[1]) + cy[2] * r[2]) + cy[3] * r[3];
    }
}

typedef float v4 __attribute__((vector_size(16)));

/* `sample` of 3 planes stored interleaved (h, w, 4: i1, ix, iy, unused), bicubic: the three
 * planes in the lanes of one vector, each lane the same arithmetic as `sample`. */
static inline v4 sample3_cubic(const v4 *st, const Grid *g, float px, float py) {
    const int h = g->h, w = g->w;
    float X = (px * g->nx - 1.0f + 1.0f) * g->sx;
    float Y = (py * g->ny - 1.0f + 1.0f) * g->sy;
    float fx = floorf(X), fy = floorf(Y), cx[4], cy[4];
    cubic_weights(X - fx, cx);
    cubic_weights(Y - fy, cy);
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

/* `ops.warp` of `np` (<= 4) planes (np, h, w) by the flow u (2, h, w) (exported for the tests). */
int tvl1_warp(int h, int w, int np, const float *src, const float *u, int bilinear, float *dst) {
    size_t n = (size_t)h * w;
    const float *planes[4];
    float v[4];
    if (np > 4) return -1;
    for (int c = 0; c < np; c++) planes[c] = src + c * n;
    Grid g = grid(h, w);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t o = (size_t)y * w + x;
            sample(planes, np, &g, (float)x + u[o], (float)y + u[n + o], bilinear, v);
            for (int c = 0; c < np; c++) dst[c * n + o] = v[c];
        }
    return 0;
}

enum { REPLICATE = 1, DATA_BORDER = 2, BILINEAR = 4, U_IS_ZERO = 8, BIAS = 16 };

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
#define LEVEL_INTS 4    /* h, w, warps, iters */
#define LEVEL_FLOATS 18 /* centred taps (6), forward (4), backward (4), consts (4) */

/* One warp of `_tv_l1_level`: warp i1, ix, iy by u (or not: `identity`); with `bias`, shift
 * the warped i1 by the median of (i0 - it) over the pixels that stay inside (`ops.median_offset`,
 * `scratch` holds n floats); blank the data term where x + u leaves the image (unless
 * `border`); then grad_i, grad_sq and rho_c. */
static void warp_data(int h, int w, const float *i0, const float *const *stack, const v4 *inter,
                      const float *u, int identity, int border, int bilinear, int bias, float eps, float *gi,
                      float *gsq, float *rc, float *scratch) {
    size_t n = (size_t)h * w, m = 0;
    const float lox = -0.5f, hix = (float)(w - 1) + 0.5f, hiy = (float)(h - 1) + 0.5f;
    Grid g = grid(h, w);
    for (int y = 0; y < h; y++) /* warped values: i1 into rc (for now), the gradients into gi */
        for (int x = 0; x < w; x++) {
            size_t o = (size_t)y * w + x;
            float v[3];
            if (identity) {
                v[0] = stack[0][o], v[1] = stack[1][o], v[2] = stack[2][o];
            } else {
                float px = (float)x + u[o], py = (float)y + u[n + o];
                if (bilinear) {
                    sample(stack, 3, &g, px, py, 1, v);
                } else {
                    v4 s = sample3_cubic(inter, &g, px, py);
                    v[0] = s[0], v[1] = s[1], v[2] = s[2];
                }
            }
            rc[o] = v[0], gi[o] = v[1], gi[n + o] = v[2];
        }
    float shift = 0.0f;
    if (bias) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t o = (size_t)y * w + x;
                float px = (float)x + u[o], py = (float)y + u[n + o];
                if (identity || (px >= lox && px <= hix && py >= lox && py <= hiy)) scratch[m++] = i0[o] - rc[o];
            }
        shift = m ? select_kth(scratch, m, (m - 1) / 2) : 0.0f; /* the lower middle, as torch */
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t o = (size_t)y * w + x;
            float u1 = u[o], u2 = u[n + o], v0 = rc[o], v1 = gi[o], v2 = gi[n + o];
            if (bias) v0 = v0 + shift;
            if (!identity && !border) {
                float px = (float)x + u1, py = (float)y + u2;
                if (!(px >= lox && px <= hix && py >= lox && py <= hiy)) v0 = i0[o], v1 = 0.0f, v2 = 0.0f;
            }
            gi[o] = v1;
            gi[n + o] = v2;
            gsq[o] = (v1 * v1 + v2 * v2) + eps;
            rc[o] = (v0 - (v1 * u1 + v2 * u2)) - i0[o];
        }
}

/* The whole solve of one image: levels coarsest first, `shape` (levels, 4) = h, w, warps,
 * iters; `par` (levels, 18) = centred (2, 3), forward (2, 2), backward (2, 2) taps, then
 * lambda*theta, theta, tau/theta, eps. i0, i1 (H, W) prepared grey frames; u_init (2, h, w)
 * at the first level; out (2, h, w) at the last. The frames of each level are area averages
 * of the full frames; the flow goes from level to level by `ops.resize_flow`.
 * Returns 0, or -1 when out of memory. */
int tvl1_solve(int H, int W, const float *i0, const float *i1, const float *u_init, int levels,
               const int *shape, const float *par, int flags, int group, float *out) {
    size_t big = 1;
    for (int l = 0; l < levels; l++) {
        size_t n = (size_t)shape[l * LEVEL_INTS] * shape[l * LEVEL_INTS + 1];
        big = n > big ? n : big;
    }
    float *mem = aligned_alloc(16, 20 * big * sizeof(float));
    if (!mem) return -1;
    v4 *inter = (v4 *)(mem + 16 * big); /* i1, ix, iy interleaved for the bicubic warp */
    float *l0 = mem, *l1 = mem + big, *gx = mem + 2 * big, *gy = mem + 3 * big, *u = mem + 4 * big,
          *px = mem + 6 * big, *py = mem + 8 * big, *gi = mem + 10 * big, *gsq = mem + 12 * big,
          *rc = mem + 13 * big, *tmp = mem + 14 * big;
    int ph = shape[0], pw = shape[1];
    memcpy(u, u_init, 2 * (size_t)ph * pw * sizeof(float));
    for (int l = 0; l < levels; l++) {
        const int *s = shape + l * LEVEL_INTS;
        const float *p = par + l * LEVEL_FLOATS;
        int h = s[0], w = s[1];
        size_t n = (size_t)h * w;
        if (h != ph || w != pw) {
            tvl1_resize_flow(ph, pw, u, h, w, tmp);
            float *t = u;
            u = tmp, tmp = t;
        }
        const float *a = i0, *b = i1;
        if (h != H || w != W) {
            resize_plane(i0, H, W, l0, h, w);
            resize_plane(i1, H, W, l1, h, w);
            a = l0, b = l1;
        }
        tvl1_centred_gradient(h, w, b, p, flags & REPLICATE, gx, gy);
        const float *stack[3] = {b, gx, gy};
        if (!(flags & BILINEAR))
            for (size_t i = 0; i < n; i++) inter[i] = (v4){b[i], gx[i], gy[i], 0.0f};
        memset(px, 0, 2 * n * sizeof(float));
        memset(py, 0, 2 * n * sizeof(float));
        Params k = params(p + 6, p + 14);
        Buf buf = {u, px, py, gi, gsq, rc, n, n, h, w};
        for (int warp = 0; warp < s[2]; warp++) {
            int identity = l == 0 && warp == 0 && (flags & U_IS_ZERO);
            warp_data(h, w, a, stack, inter, u, identity, flags & DATA_BORDER, flags & BILINEAR, flags & BIAS, p[17],
                      gi, gsq, rc, tmp);
            run(&k, &buf, s[3], group);
        }
        ph = h, pw = w;
    }
    memcpy(out, u, 2 * (size_t)ph * pw * sizeof(float));
    free(mem);
    return 0;
}
