"""Shared, model-agnostic building blocks: morphological pooling, soft skeleton, image gradients.

Every function works on batched tensors, ``(N, C, D, H, W)`` for volumes (and ``(N, C, H, W)``
for images where noted), is differentiable, and has no learned parameters.

Morphological pooling (UMIS, paper 000, eq. 2-3 and 12-16)
    ``si_pool`` (sup of infs) and ``is_pool`` (inf of sups) over the nine 3x3x3 structuring
    elements of the UMIS paper: the nine planar 3x3 squares through the centre of the 3x3x3 cube.
    Written as offsets ``(dz, dy, dx)`` in ``{-1, 0, 1}``, each element is the set
    ``{a*u + b*v}`` spanned by two directions ``u``, ``v``:

    ====  =======================  ===============================================
    #     plane                    directions (u, v)
    ====  =======================  ===============================================
    0     dx = 0  (z-y plane)      (1, 0, 0), (0, 1, 0)
    1     dy = 0  (z-x plane)      (1, 0, 0), (0, 0, 1)
    2     dz = 0  (y-x plane)      (0, 1, 0), (0, 0, 1)
    3     dy = dx                  (1, 0, 0), (0, 1, 1)
    4     dy = -dx                 (1, 0, 0), (0, 1, -1)
    5     dz = dx                  (0, 1, 0), (1, 0, 1)
    6     dz = -dx                 (0, 1, 0), (1, 0, -1)
    7     dz = dy                  (0, 0, 1), (1, 1, 0)
    8     dz = -dy                 (0, 0, 1), (1, -1, 0)
    ====  =======================  ===============================================

    In 2D the elements are the four 3-pixel lines through the centre (horizontal, vertical and the
    two diagonals), as in morphological active contours. Because ``u`` and ``v`` act on disjoint
    axes, erosion by an element equals erosion by the ``u`` line followed by the ``v`` line, which
    is how the fast path computes it (exactly, borders included).

Borders: outside the array is *neutral* (``+inf`` for erosions, ``-inf`` for dilations), i.e. a
voxel's window is clipped to the array. This matters for the few-slice stacks of two-photon data,
where vessels touch the first and last slices.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_vessel.errors import InputError

__all__ = [
    "ELEMENT_DIRECTIONS_3D",
    "ELEMENT_DIRECTIONS_2D",
    "structuring_elements",
    "erode_se",
    "dilate_se",
    "si_pool",
    "is_pool",
    "morph_smooth",
    "soft_erode",
    "soft_dilate",
    "soft_open",
    "soft_skeleton",
    "central_gradients",
    "gradient_l1",
    "sobel_gradients_3d",
]

Direction = tuple[int, ...]

#: The nine UMIS elements as pairs of spanning directions (dz, dy, dx); see the module docstring.
ELEMENT_DIRECTIONS_3D: tuple[tuple[Direction, Direction], ...] = (
    ((1, 0, 0), (0, 1, 0)),
    ((1, 0, 0), (0, 0, 1)),
    ((0, 1, 0), (0, 0, 1)),
    ((1, 0, 0), (0, 1, 1)),
    ((1, 0, 0), (0, 1, -1)),
    ((0, 1, 0), (1, 0, 1)),
    ((0, 1, 0), (1, 0, -1)),
    ((0, 0, 1), (1, 1, 0)),
    ((0, 0, 1), (1, -1, 0)),
)

#: The four 2D elements (3-pixel lines through the centre), as single directions (dy, dx).
ELEMENT_DIRECTIONS_2D: tuple[tuple[Direction], ...] = (((0, 1),), ((1, 0),), ((1, 1),), ((1, -1),))


def _check_batched(x: torch.Tensor, name: str = "x", ndims: tuple[int, ...] = (4, 5)) -> int:
    """Return the number of spatial axes of ``x`` or raise :class:`InputError`."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.ndim not in ndims:
        shapes = " or ".join("(N, C, D, H, W)" if n == 5 else "(N, C, H, W)" for n in ndims)
        raise InputError(f"{name} has shape {tuple(x.shape)}; expected {shapes}")
    return x.ndim - 2


def structuring_elements(ndim: int = 3) -> np.ndarray:
    """The UMIS structuring elements as boolean masks.

    Parameters
    ----------
    ndim : {3, 2}
        3 for the nine 3x3x3 elements (paper 000, Fig. 1), 2 for the four 3x3 lines.

    Returns
    -------
    ndarray of bool, shape (9, 3, 3, 3) or (4, 3, 3)
    """
    if ndim not in (2, 3):
        raise InputError(f"structuring elements exist for 2 or 3 axes, not {ndim}")
    table = ELEMENT_DIRECTIONS_3D if ndim == 3 else ELEMENT_DIRECTIONS_2D
    masks = np.zeros((len(table),) + (3,) * ndim, dtype=bool)
    centre = np.ones(ndim, dtype=int)
    for i, directions in enumerate(table):
        offsets = [np.zeros(ndim, dtype=int)]
        for d in directions:
            offsets = [o + s * np.asarray(d) for o in offsets for s in (-1, 0, 1)]
        for o in offsets:
            masks[(i, *(o + centre))] = True
    return masks


def _pad_neutral(x: torch.Tensor, radius: tuple[int, ...], fill: float) -> torch.Tensor:
    """Pad the spatial axes of ``x`` by ``radius`` (per axis, both sides) with ``fill``."""
    pads: list[int] = []
    for r in reversed(radius):
        pads += [r, r]
    return F.pad(x, pads, mode="constant", value=fill)


def _rank_keys(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer keys ordered like the values of ``x`` (ties broken by position), and the sort order.

    Every output of a flat erosion or dilation, and of any chain of them, is one input voxel; doing
    the min/max on unique integer ranks instead of the values tells which voxel it is, at the cost
    of one sort. ``order[key]`` is the flat index of the voxel with rank ``key``.
    """
    flat = x.detach().reshape(-1)
    order = torch.argsort(flat, stable=True)
    dtype = torch.int32 if flat.numel() < 2**31 - 1 else torch.int64
    keys = torch.empty(flat.numel(), dtype=dtype, device=x.device)
    keys[order] = torch.arange(flat.numel(), dtype=dtype, device=x.device)
    return keys.view_as(x), order


def _reduce(keys: torch.Tensor, offsets: np.ndarray, erode: bool) -> torch.Tensor:
    """Min (``erode``) or max of ``keys(p + o)`` over the offsets ``o``; outside is neutral."""
    nd = keys.ndim - 2
    radius = tuple(int(r) for r in np.abs(offsets).max(axis=0))
    if keys.is_floating_point():  # plain values (no gradient needed): +-inf are neutral
        fill = float("inf") if erode else float("-inf")
    else:  # ranks are 0 .. numel-1, so numel and -1 are neutral
        fill = keys.numel() if erode else -1
    padded = _pad_neutral(keys, radius, fill) if any(radius) else keys
    op = torch.minimum if erode else torch.maximum
    out = None
    for o in offsets:
        window = tuple(
            slice(radius[a] + int(o[a]), radius[a] + int(o[a]) + keys.shape[2 + a])
            for a in range(nd)
        )
        view = padded[(Ellipsis, *window)]
        out = view if out is None else op(out, view)
    return out


def _line_offsets(direction: Direction) -> np.ndarray:
    """Offsets of the 3-voxel line ``{-d, 0, +d}``."""
    d = np.asarray(direction, dtype=int)
    return np.stack([-d, np.zeros_like(d), d])


def _umis_pool(keys: torch.Tensor, erode: bool) -> torch.Tensor:
    """SI (``erode=True``: max of erosions) or IS (min of dilations) on rank keys.

    Each element is a line pass along ``u`` then along ``v``; elements sharing ``u`` share that pass.
    """
    nd = keys.ndim - 2
    table = ELEMENT_DIRECTIONS_3D if nd == 3 else ELEMENT_DIRECTIONS_2D
    first: dict[Direction, torch.Tensor] = {}
    outer = torch.maximum if erode else torch.minimum  # sup over B (SI) or inf over B (IS)
    best = None
    for directions in table:
        u = directions[0]
        if u not in first:
            first[u] = _reduce(keys, _line_offsets(u), erode)
        out = first[u]
        for w in directions[1:]:
            out = _reduce(out, _line_offsets(w), erode)
        best = out if best is None else outer(best, out)
    return best


class _Selection(torch.autograd.Function):
    """An operator whose every output is one input voxel: gradient = scatter to that voxel.

    ``select`` maps rank keys to rank keys using only min/max over neighbourhoods.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, select) -> torch.Tensor:
        with torch.no_grad():
            keys, order = _rank_keys(x)
            index = order[select(keys).reshape(-1).long()]
            value = x.detach().reshape(-1)[index].view_as(x)
        ctx.save_for_backward(index)
        ctx.input_shape = x.shape
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        grad_x = torch.zeros(ctx.input_shape, dtype=grad.dtype, device=grad.device)
        grad_x.view(-1).index_add_(0, index, grad.reshape(-1))
        return grad_x, None


def _needs_grad(x: torch.Tensor) -> bool:
    """True when autograd will need the selection indices (training)."""
    return torch.is_grad_enabled() and x.requires_grad


def _check_se(x: torch.Tensor, se: np.ndarray | torch.Tensor) -> np.ndarray:
    nd = _check_batched(x)
    mask = np.asarray(se.detach().cpu() if isinstance(se, torch.Tensor) else se).astype(bool)
    if mask.ndim != nd or any(s % 2 == 0 for s in mask.shape) or not mask.any():
        raise InputError(
            f"structuring element of shape {mask.shape} does not fit a {nd}D input; "
            f"give a non-empty boolean mask with {nd} odd-sized axes"
        )
    return np.argwhere(mask) - np.asarray(mask.shape) // 2


def erode_se(x: torch.Tensor, se: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Grey erosion ``inf_{y in p + B} x(y)`` by a flat structuring element (eq. 2 inner term).

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    se : array of bool, shape (3, 3, 3) or (3, 3) (any odd size), centred on the origin

    Returns
    -------
    Tensor, same shape as ``x``. Outside the array is ignored (neutral padding). The gradient
    flows to the voxel that attains the minimum.
    """
    offsets = _check_se(x, se)
    return _Selection.apply(x, lambda k: _reduce(k, offsets, erode=True))


def dilate_se(x: torch.Tensor, se: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Grey dilation ``sup_{y in p + B} x(y)`` by a flat structuring element (eq. 3 inner term).

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    se : array of bool, centred on the origin (the UMIS elements are symmetric, so reflecting
        ``B`` or not gives the same result)

    Returns
    -------
    Tensor, same shape as ``x``.
    """
    offsets = _check_se(x, se)
    return _Selection.apply(x, lambda k: _reduce(k, offsets, erode=False))


def si_pool(x: torch.Tensor) -> torch.Tensor:
    """Sup-of-infs morphological pooling SI (paper 000, eq. 2 and 14).

    ``SI x(p) = max_B min_{y in p + B} x(y)`` over the UMIS elements (nine in 3D, four in 2D).
    Removes thin bright protrusions. Differentiable: each output is one input voxel and the gradient
    flows to it (as in the paper's pooling layer); computed without per-op autograd bookkeeping.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)

    Returns
    -------
    Tensor, same shape as ``x``.
    """
    _check_batched(x)
    if not _needs_grad(x):
        return _umis_pool(x, erode=True)
    return _Selection.apply(x, lambda k: _umis_pool(k, erode=True))


def is_pool(x: torch.Tensor) -> torch.Tensor:
    """Inf-of-sups morphological pooling IS (paper 000, eq. 3 and 15).

    ``IS x(p) = min_B max_{y in p + B} x(y)`` over the UMIS elements. Fills thin dark gaps.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)

    Returns
    -------
    Tensor, same shape as ``x``.
    """
    _check_batched(x)
    if not _needs_grad(x):
        return _umis_pool(x, erode=False)
    return _Selection.apply(x, lambda k: _umis_pool(k, erode=False))


def morph_smooth(x: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Curvature smoothing ``(SI o IS)^mu`` of a segmentation (paper 000, eq. 10 and 12).

    Eq. 12 writes ``S = SI(IS(...SI(IS(S_bar))))``: IS is applied first, then SI, and the pair is
    repeated ``iterations`` (mu) times; the paper uses mu = 3.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    iterations : int
        Number of (SI o IS) pairs, >= 0.

    Returns
    -------
    Tensor, same shape as ``x``.
    """
    if iterations < 0:
        raise InputError(f"iterations must be >= 0, got {iterations}")
    _check_batched(x)
    if iterations == 0:
        return x

    def chain(keys: torch.Tensor) -> torch.Tensor:
        # the whole chain only ever selects input voxels, so one ranking serves all 2*mu pools
        for _ in range(iterations):
            keys = _umis_pool(_umis_pool(keys, erode=False), erode=True)
        return keys

    if not _needs_grad(x):  # inference: min/max on the values directly, no ranking sort
        return chain(x)
    return _Selection.apply(x, chain)


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft (min-pool) erosion of clDice (paper 004, Algorithm 2 "minpool").

    The minimum over the 6-connected cross (4-connected in 2D): the minimum of three axis-aligned
    3-voxel min-pools, as in the authors' implementation.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    """
    nd = _check_batched(x)
    out = None
    for axis in range(nd):
        kernel = tuple(3 if a == axis else 1 for a in range(nd))
        padding = tuple(1 if a == axis else 0 for a in range(nd))
        pool = F.max_pool3d if nd == 3 else F.max_pool2d
        p = -pool(-x, kernel, stride=1, padding=padding)
        out = p if out is None else torch.minimum(out, p)
    return out


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft (max-pool) dilation of clDice: 3x3x3 (3x3 in 2D) max-pool, stride 1 (Algorithm 2).

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
    """
    nd = _check_batched(x)
    pool = F.max_pool3d if nd == 3 else F.max_pool2d
    return pool(x, 3, stride=1, padding=1)


def soft_open(x: torch.Tensor) -> torch.Tensor:
    """Soft opening ``maxpool(minpool(x))`` (paper 004, Algorithm 2)."""
    return soft_dilate(soft_erode(x))


def soft_skeleton(x: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Differentiable soft centreline of a soft mask (paper 004, Algorithm 2).

    ``cl = ReLU(x - open(x))``; then ``iterations`` times: ``x = erode(x)``,
    ``delta = ReLU(x - open(x))``, ``cl = cl + ReLU(delta - cl * delta)``. The last line follows the
    authors' implementation; the update printed in Algorithm 2 (``cl + cl * ReLU(...)``) could never
    add a voxel that the first step missed.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)
        Values in [0, 1].
    iterations : int
        k in Algorithm 2; about the largest vessel radius in voxels (the paper uses 5).

    Returns
    -------
    Tensor, same shape as ``x``, values in [0, 1].
    """
    _check_batched(x)
    if iterations < 0:
        raise InputError(f"iterations must be >= 0, got {iterations}")
    eroded = soft_erode(x)
    skeleton = F.relu(x - soft_dilate(eroded))  # x - open(x)
    for _ in range(iterations):
        x = eroded  # x <- erode(x); its erosion is reused by open(x)
        eroded = soft_erode(x)
        delta = F.relu(x - soft_dilate(eroded))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def central_gradients(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Central differences ``(x[p+1] - x[p-1]) / 2`` along each spatial axis.

    Used for ``grad S_bar`` in eq. 18 and ``grad I_bar`` in eq. 23 of paper 000. At the borders
    the array is extended by replication, giving a one-sided half difference.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W) or (N, C, H, W)

    Returns
    -------
    tuple of Tensor
        ``(d/dz, d/dy, d/dx)`` (or ``(d/dy, d/dx)``), each the shape of ``x``.
    """
    nd = _check_batched(x)
    padded = F.pad(x, [1] * (2 * nd), mode="replicate")
    grads = []
    for axis in range(nd):
        hi = tuple(slice(2, None) if a == axis else slice(1, -1) for a in range(nd))
        lo = tuple(slice(None, -2) if a == axis else slice(1, -1) for a in range(nd))
        grads.append((padded[(Ellipsis, *hi)] - padded[(Ellipsis, *lo)]) / 2)
    return tuple(grads)


def gradient_l1(x: torch.Tensor) -> torch.Tensor:
    """``||grad x||_1 = |dx/dz| + |dx/dy| + |dx/dx|`` by central differences (paper 000, eq. 18, 23)."""
    return sum(g.abs() for g in central_gradients(x))


def sobel_gradients_3d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3D Sobel derivatives along z, y and x (paper 001, eq. 2).

    The kernel for one axis is ``[-1, 0, 1]`` along it times the smoothing ``[1, 2, 1]`` along each
    other axis (unnormalised, as the usual Sobel operator). Borders are extended by replication so a
    vessel touching the patch border is not penalised.

    Parameters
    ----------
    x : Tensor, shape (N, C, D, H, W)

    Returns
    -------
    tuple of 3 Tensor
        ``(G_z, G_y, G_x)``, each of shape (N, C, D, H, W).
    """
    _check_batched(x, ndims=(5,))
    deriv = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernels = []
    for axis in range(3):
        vectors = [deriv if a == axis else smooth for a in range(3)]
        kernels.append(torch.einsum("i,j,k->ijk", *vectors))
    channels = x.shape[1]
    weight = torch.stack(kernels).unsqueeze(1).repeat(channels, 1, 1, 1, 1)  # (3C, 1, 3, 3, 3)
    padded = F.pad(x, [1] * 6, mode="replicate")
    out = F.conv3d(padded, weight, groups=channels)  # channel c -> outputs 3c, 3c+1, 3c+2
    return out[:, 0::3], out[:, 1::3], out[:, 2::3]
