// Fused NNGP/NTK recursion, one thread per pair: the CUDA engine of ntkdist/kernels/fused_gpu.py.
//
// Compiled by CuPy (NVRTC) for the GPU engine, and by a host C++ compiler in tests/kernels/test_fused_gpu_source.py
// and tests/kernels/test_engines_agree.py, which run the same per-pair arithmetic on the CPU (no GPU needed to
// check the math). Always compile the text of fused_gpu.cuda_source(), which defines what this file takes from
// the Python definitions: OUT_T and NTK_ASIN_P.
//
// Each formula here restates one Python definition, named where it stands; the Python one is the definition.
// What can be a table is one: the per-point layer variances come from analytic.layer_variances (through
// analytic.layer_tables), the activation's constants from fused_gpu.activation_parameters, the near-parallel
// threshold from gram.NEAR_PARALLEL, the arcsine polynomial's coefficients from fused_cpu._ASIN_P.
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

#if !defined(NTK_ASIN_P) || !defined(NTK_ERF_TINY_SCALE)
#error "compile the text of ntkdist.kernels.fused_gpu.cuda_source(), which defines NTK_ASIN_P and NTK_ERF_TINY_SCALE"
#endif

// asin(x), 0 ≤ x ≤ 1/√2, as x + x³·P(x²): fused_cpu.asin_half, the same coefficients (NTK_ASIN_P, highest degree
// first) in the same Horner order.
NTK_DEVICE double ntk_asin_half(double x) {
    const double coefficients[] = {NTK_ASIN_P};
    const int count = sizeof(coefficients) / sizeof(coefficients[0]);
    const double z = x * x;
    double p = coefficients[0];
#ifdef __CUDACC_RTC__
#pragma unroll
#endif
    for (int k = 1; k < count; ++k) p = p * z + coefficients[k];
    return x + x * z * p;
}

// fused_cpu.asin_given_cosine: asin(x) given cosine = sqrt(1 - x^2), computed on its own.
NTK_DEVICE double ntk_asin_given_cosine(double x, double cosine) {
    const double t = fabs(x);
    const double y = t <= NTK_SQRT_HALF ? ntk_asin_half(t) : NTK_HALF_PI - ntk_asin_half(cosine);
    return x >= 0.0 ? y : -y;
}

// activation_base.theta_minus_sin: a Taylor series below 0.5 (where θ − sin θ would cancel).
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
    // gram.input_moments: near-(anti)parallel pairs (gram.near_parallel) from gram.unit_gap of the unit rows.
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
        sigma = w * cov + b;
        theta = sigma + w * dcov * theta;
        if (layer == depth) break;
        // analytic.dense_layer: the numerators of fused_cpu._dense_numerators.
        const double scale = rqx * rqy;
        const double total = scale + (w * (rx * ry) + b);
        const double diff = rx - ry;
        const double am_gm = (b * w) * diff * diff;
        const double lo_num = am_gm + w * lo * total;
        const double hi_num = am_gm + (2.0 * b + w * hi) * total;
        if (act_kind == 0) {
            // fused_cpu._dense (one division), then closed_form_activations.ABReLU.pair_moments (as
            // fused_cpu._abrelu_layer): the arc-cosine kernel.
            const bool positive = scale > 0.0;
            const double inv = positive ? 1.0 / (total * scale) : 0.0;
            const double c = positive ? ntk_clip(sigma * total * inv, -1.0, 1.0) : 0.0;
            const double e = positive ? ntk_clip(lo_num * inv, 0.0, 2.0) : 1.0;
            const double f = positive ? ntk_clip(hi_num * inv, 0.0, 2.0) : 1.0;
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
            // closed_form_activations.Erf.pair_moments as fused_cpu._erf_layer computes it (Williams 1997): G =
            // det * (T u)^2 from the numerators, then one square root and one division give 1/sqrt(det) and the
            // arcsine's cosine. x's and y's factors are multiplied first: (x, y) and (y, x) round the same.
            const double qx = q_x[layer * n + i], qy = q_y[layer * m + j];
            const double u = ia_x[layer * n + i] * ia_y[layer * m + j];
            const double tu = total * u > NTK_ERF_TINY_SCALE ? total * u : NTK_ERF_TINY_SCALE;
            const double g = (1.0 + 2.0 * (qx + qy)) * (tu * tu)
                + 4.0 * (((lo_num > 0.0 ? lo_num : 0.0) * u) * ((hi_num > 0.0 ? hi_num : 0.0) * u));
            const double r = 1.0 / (tu * sqrt(g));
            const double value = (2.0 / NTK_PI) * ntk_asin_given_cosine(2.0 * sigma * u, (g * r) * u);
            const double root = rv_x[(layer + 1) * n + i] * rv_y[(layer + 1) * m + j];
            cov = value;
            dcov = (4.0 / NTK_PI) * ((tu * tu) * r);
            lo = root - value > 0.0 ? root - value : 0.0;
            hi = root + value > 0.0 ? root + value : 0.0;
        }
    }
    return want_ntk ? theta : sigma;
}

// The arguments of the grid, shared by the CUDA kernel and its host twin.
#define NTK_GRAM_PARAMS(OUT) \
    const double* inner, long long ld_inner, const double* x_hat, const double* y_hat, int dim, \
    const double* sq_x, const double* sq_y, \
    const double* rv_x, const double* rq_x, const double* q_x, const double* ia_x, int n, \
    const double* rv_y, const double* rq_y, const double* q_y, const double* ia_y, int m, \
    int depth, double w, double b, int act_kind, double ab, double alpha2, double beta2, double near, \
    int want_ntk, int symmetric, OUT* out, long long ld_out

// The entry (i, j) of the (n, m) output; symmetric = 1 when rows and columns are the same points (n == m): it is
// then the pair (min, max), reading the product and rows in that order.
template <typename Out>
NTK_DEVICE void ntk_gram_entry(int i, int j, NTK_GRAM_PARAMS(Out)) {
    int r = i, c = j;
    if (symmetric && i > j) { r = j; c = i; }
    const double value = ntk_fused_pair(
        inner[(long long)r * ld_inner + c], sq_x[r], sq_y[c], x_hat + (long long)r * dim, y_hat + (long long)c * dim,
        dim, near, rv_x, rq_x, q_x, ia_x, r, n, rv_y, rq_y, q_y, ia_y, c, m,
        depth, w, b, act_kind, ab, alpha2, beta2, want_ntk);
    out[(long long)i * ld_out + j] = (Out)value;
}

#define NTK_GRAM_ARGS \
    inner, ld_inner, x_hat, y_hat, dim, sq_x, sq_y, rv_x, rq_x, q_x, ia_x, n, rv_y, rq_y, q_y, ia_y, m, \
    depth, w, b, act_kind, ab, alpha2, beta2, near, want_ntk, symmetric, out, ld_out

#ifdef __CUDACC_RTC__
// One thread per output entry.
extern "C" __global__ void ntk_fused_gram(NTK_GRAM_PARAMS(OUT_T)) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= n || j >= m) return;
    ntk_gram_entry<OUT_T>(i, j, NTK_GRAM_ARGS);
}
#else
// Host twin of the grid, for the CPU tests of this source.
extern "C" void ntk_fused_gram_host(NTK_GRAM_PARAMS(double)) {
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) ntk_gram_entry<double>(i, j, NTK_GRAM_ARGS);
}
#endif
