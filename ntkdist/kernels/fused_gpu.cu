// Fused NNGP/NTK recursion, one thread per pair: the CUDA twin of ntkdist/kernels/fused_cpu.py.
//
// Compiled by CuPy (NVRTC) for the GPU engine, and by a host C++ compiler in tests/kernels/test_fused_gpu_source.py,
// which runs the same per-pair arithmetic on the CPU against the NumPy engine (no GPU needed to check the math).
// Layer tables are (depth + 1) × n, row-major by layer: for point i and Dense layer l,
//   rv = √E_l (input variance), rq = √q_l (output variance), q = q_l, ia = 1/√(1 + 2 q_l) (erf only).
// The pair (i, j) of a symmetric Gram is computed with min(i, j) as the row, so both triangles agree bitwise.

#ifdef __CUDACC_RTC__
#define NTK_DEVICE __device__ __forceinline__
#else
#include <cmath>
#define NTK_DEVICE static inline
using std::sqrt;
using std::fabs;
#endif

#ifndef OUT_T
#define OUT_T double
#endif

#define NTK_PI 3.141592653589793
#define NTK_HALF_PI 1.5707963267948966
#define NTK_SQRT_HALF 0.7071067811865476

NTK_DEVICE double ntk_clip(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// asin(x), 0 ≤ x ≤ 1/√2: the degree-18 polynomial of fused_cpu.py (same coefficients, same Horner order).
NTK_DEVICE double ntk_asin_half(double x) {
    const double z = x * x;
    double p = 0.8387674099544927;
    p = p * z + -3.0948547605199717;
    p = p * z + 5.436384462318588;
    p = p * z + -5.883233416999023;
    p = p * z + 4.3847119392409954;
    p = p * z + -2.3535297860232123;
    p = p * z + 0.952265420570822;
    p = p * z + -0.2809947932275328;
    p = p * z + 0.07377343868679113;
    p = p * z + -0.0032941927380090922;
    p = p * z + 0.011310924828955462;
    p = p * z + 0.01139924601483468;
    p = p * z + 0.013975730180211136;
    p = p * z + 0.017352221539201188;
    p = p * z + 0.0223721770065477;
    p = p * z + 0.030381944084994415;
    p = p * z + 0.04464285714665563;
    p = p * z + 0.07499999999998412;
    p = p * z + 0.16666666666666669;
    return x + x * z * p;
}

NTK_DEVICE double ntk_asin_unit(double x) {
    const double t = fabs(x);
    const double y = t <= NTK_SQRT_HALF ? ntk_asin_half(t) : NTK_HALF_PI - 2.0 * ntk_asin_half(sqrt(0.5 * (1.0 - t)));
    return x >= 0.0 ? y : -y;
}

NTK_DEVICE double ntk_theta_minus_sin(double theta, double sin_theta) {
    if (theta >= 0.5) return theta - sin_theta;
    const double t2 = theta * theta;
    return theta * t2 * (1.0 / 6.0 - t2 * (1.0 / 120.0 - t2 * (1.0 / 5040.0 - t2 * (
        1.0 / 362880.0 - t2 * (1.0 / 39916800.0 - t2 * (1.0 / 6227020800.0 - t2 / 1307674368000.0))))));
}

// One pair through every layer. Returns Θ (want_ntk) or Σ of the readout.
NTK_DEVICE double ntk_fused_pair(
    double inner, double sx, double sy, const double* xh, const double* yh, int dim, double near,
    const double* rv_x, const double* rq_x, const double* q_x, const double* ia_x, int i, int n,
    const double* rv_y, const double* rq_y, const double* q_y, const double* ia_y, int j, int m,
    int depth, double w, double b, int act_kind, double ab, double alpha2, double beta2, int want_ntk)
{
    // Input moments (gram.input_moments): near-(anti)parallel pairs from the normalised rows.
    const double prod = sqrt(sx * sy);
    double cov = inner, lo = prod - inner, hi = prod + inner;
    const double threshold = near * prod;
    if (prod > 0.0 && (lo < threshold || hi < threshold)) {
        const double sign = lo < threshold ? -1.0 : 1.0;
        double acc = 0.0;
        for (int k = 0; k < dim; ++k) {
            const double t = xh[k] + sign * yh[k];
            acc += t * t;
        }
        const double gap = prod * (0.5 * acc);
        if (sign < 0.0) { lo = gap; cov = prod - gap; hi = 2.0 * prod - gap; }
        else            { hi = gap; cov = gap - prod; lo = 2.0 * prod - gap; }
    }
    lo = lo > 0.0 ? lo : 0.0;
    hi = hi > 0.0 ? hi : 0.0;
    const double inv_d = 1.0 / dim;
    cov *= inv_d; lo *= inv_d; hi *= inv_d;

    const double beta_term = 2.0 * beta2 / NTK_PI;
    const double beta_over_pi = beta2 / NTK_PI;
    double dcov = 0.0, theta = 0.0, sigma = 0.0;
    for (int layer = 0; layer <= depth; ++layer) {
        const double rx = rv_x[layer * n + i], ry = rv_y[layer * m + j];
        const double rqx = rq_x[layer * n + i], rqy = rq_y[layer * m + j];
        // Dense (fused_cpu._dense): one division.
        sigma = w * cov + b;
        theta = sigma + w * dcov * theta;
        if (layer == depth) break;
        const double scale = rqx * rqy;
        const bool positive = scale > 0.0;
        const double geometric = w * (rx * ry) + b;
        const double total = scale + geometric;
        const double inv = positive ? 1.0 / (total * scale) : 0.0;
        const double diff = rx - ry;
        const double am_gm = (b * w) * diff * diff;
        const double c = positive ? ntk_clip(sigma * total * inv, -1.0, 1.0) : 0.0;
        const double e = positive ? ntk_clip((am_gm + w * lo * total) * inv, 0.0, 2.0) : 1.0;
        const double f = positive ? ntk_clip((am_gm + (2.0 * b + w * hi) * total) * inv, 0.0, 2.0) : 1.0;
        if (act_kind == 0) {
            // ABReLU (fused_cpu._abrelu_layer).
            const bool near_zero = e <= f;
            const double small = near_zero ? e : f;
            const double alpha = 2.0 * ntk_asin_half(sqrt(0.5 * small));
            const double sin_theta = sqrt(e * f);
            const double tms = ntk_theta_minus_sin(alpha, sin_theta);
            const double pi_minus_theta = near_zero ? NTK_PI - alpha : alpha;
            const double jv = near_zero ? sin_theta + pi_minus_theta * c : alpha * f - tms;
            const double pi_minus_even = small * (NTK_PI - 2.0 * alpha) + 2.0 * tms;
            const double even = 2.0 * jv - NTK_PI * c;
            cov = scale * (ab * c + beta_term * jv);
            dcov = ab + beta_term * pi_minus_theta;
            lo = scale * (alpha2 * e + beta_over_pi * pi_minus_even);
            hi = scale * (alpha2 * f + beta_over_pi * (NTK_PI + even));
        } else {
            // erf (fused_cpu._erf_layer).
            const double qx = q_x[layer * n + i], qy = q_y[layer * m + j];
            const double value = (2.0 / NTK_PI) * ntk_asin_unit(2.0 * c * scale * ia_x[layer * n + i] * ia_y[layer * m + j]);
            const double det = 1.0 + 2.0 * (qx + qy) + 4.0 * qx * qy * (e * f);
            const double root = rv_x[(layer + 1) * n + i] * rv_y[(layer + 1) * m + j];
            cov = value;
            dcov = (4.0 / NTK_PI) / sqrt(det);
            lo = root - value > 0.0 ? root - value : 0.0;
            hi = root + value > 0.0 ? root + value : 0.0;
        }
    }
    return want_ntk ? theta : sigma;
}

#ifdef __CUDACC_RTC__
// Grid over the (n, m) output; symmetric = 1 when rows and columns are the same points (n == m): the thread of
// (i, j) then computes the pair (min, max), reading the product and rows in that order.
extern "C" __global__ void ntk_fused_gram(
    const double* inner, long long ld_inner, const double* x_hat, const double* y_hat, int dim,
    const double* sq_x, const double* sq_y,
    const double* rv_x, const double* rq_x, const double* q_x, const double* ia_x, int n,
    const double* rv_y, const double* rq_y, const double* q_y, const double* ia_y, int m,
    int depth, double w, double b, int act_kind, double ab, double alpha2, double beta2, double near,
    int want_ntk, int symmetric, OUT_T* out, long long ld_out)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= n || j >= m) return;
    int r = i, c = j;
    if (symmetric && i > j) { r = j; c = i; }
    const double value = ntk_fused_pair(
        inner[(long long)r * ld_inner + c], sq_x[r], sq_y[c], x_hat + (long long)r * dim, y_hat + (long long)c * dim,
        dim, near, rv_x, rq_x, q_x, ia_x, r, n, rv_y, rq_y, q_y, ia_y, c, m,
        depth, w, b, act_kind, ab, alpha2, beta2, want_ntk);
    out[(long long)i * ld_out + j] = (OUT_T)value;
}
#else
// Host twin of the grid loop, for the CPU test of this source.
extern "C" void ntk_fused_gram_host(
    const double* inner, long long ld_inner, const double* x_hat, const double* y_hat, int dim,
    const double* sq_x, const double* sq_y,
    const double* rv_x, const double* rq_x, const double* q_x, const double* ia_x, int n,
    const double* rv_y, const double* rq_y, const double* q_y, const double* ia_y, int m,
    int depth, double w, double b, int act_kind, double ab, double alpha2, double beta2, double near,
    int want_ntk, int symmetric, double* out, long long ld_out)
{
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < m; ++j) {
            int r = i, c = j;
            if (symmetric && i > j) { r = j; c = i; }
            out[(long long)i * ld_out + j] = ntk_fused_pair(
                inner[(long long)r * ld_inner + c], sq_x[r], sq_y[c], x_hat + (long long)r * dim,
                y_hat + (long long)c * dim, dim, near, rv_x, rq_x, q_x, ia_x, r, n, rv_y, rq_y, q_y, ia_y, c, m,
                depth, w, b, act_kind, ab, alpha2, beta2, want_ntk);
        }
    }
}
#endif
