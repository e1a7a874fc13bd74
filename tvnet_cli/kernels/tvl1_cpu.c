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
