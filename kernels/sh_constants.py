"""The real spherical harmonics' constants with the signs of 3D Gaussian splatting, in the order
(l, m) = (0, 0), (1, -1), (1, 0), (1, 1), (2, -2), ... (docs/kernels.md#gaussian-splatting).

Plain numbers, no Numba: the kernels of ``gaussian_project`` compile them in, and the torch reference
in ``p3dlab.ops.gaussian_splat`` imports them without loading a kernel."""

SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
SH_C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip
FRUSTUM_MARGIN = 1.3  # a Gaussian whose centre lies beyond 1.3 x the image's NDC extent is culled
