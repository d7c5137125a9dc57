"""Theory: Hermite coefficients, power series, sphere eigenvalues and spectral bounds (imports only kernels)."""
