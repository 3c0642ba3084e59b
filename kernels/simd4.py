"""Four-lane memory primitives for the CPU kernels: one SIMD instruction per corner of a density + RGB
grid cell instead of four scalar ones.

A density + RGB grid keeps the 4 channels of a voxel in 16 consecutive bytes (float32; 32 for
float64), so a trilinear read or scatter touches 8 four-wide vectors. Numba leaves LLVM's SLP
vectoriser off (it miscompiled code in the past, numba#8852) and emits these as 4 scalar loads,
multiply-adds and stores each; these intrinsics emit the vector operations themselves:

    axpy4(acc, w, a, q) = acc + w · (a[q], a[q+1], a[q+2], a[q+3])      (acc a 4-tuple)
    add4(a, q, w, g):     (a[q], …, a[q+3]) += w · (g_0, g_1, g_2, g_3)  (g a 4-tuple)

with w and the tuples in the array's dtype. They read and write ``a`` at flat index q without any
bounds or wraparound check: the callers pass indices of cells inside the grid (``volume_math``).

    prefetch_w(a, q):     ask for the cache line of a[q], to be written soon (a hint: no effect on
                          any value, no fault at any address; ``volume_fast``'s prefetching)

``volume_fast.build`` takes them as the CPU fast paths' memory primitives (the CUDA kernels run the
general ``volume_math`` core, which reads and scatters channel by channel); the tests compare them
lane by lane with NumPy.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

_FAST = ("contract", "reassoc", "nsz", "arcp")  # the kernels' fastmath flags (no nnan/ninf)
_I32 = ir.IntType(32)


def _lanes_pointer(context, builder, array_type, array, index):
    """Pointer to the 4-vector of ``array`` (a C-contiguous 1-D array) at element ``index``."""
    data = context.make_array(array_type)(context, builder, array).data
    vector = ir.VectorType(context.get_data_type(array_type.dtype), 4)
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer()), vector


def _vector(builder, vector, values):
    """The 4-tuple ``values`` as an LLVM vector."""
    out = ir.Constant(vector, ir.Undefined)
    for lane in range(4):
        out = builder.insert_element(out, builder.extract_value(values, lane), ir.Constant(_I32, lane))
    return out


def _broadcast(builder, vector, scalar):
    """(s, s, s, s)."""
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined), ir.Constant(ir.VectorType(_I32, 4), [0] * 4))


def _check(array):
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"):
        raise TypingError(f"simd4: expects a C-contiguous 1-D array, got {array}")
    if array.dtype not in (types.float32, types.float64):
        raise TypingError(f"simd4: expects float32 or float64, got {array.dtype}")


@intrinsic
def axpy4(typingctx, acc, w, a, q):
    """``acc + w · a[q : q + 4]`` (see the module docstring)."""
    _check(a)
    quad = types.UniTuple(a.dtype, 4)
    sig = quad(quad, a.dtype, a, types.intp)

    def codegen(context, builder, signature, args):
        acc_t, w_v, a_v, q_v = args
        pointer, vector = _lanes_pointer(context, builder, signature.args[2], a_v, q_v)
        loaded = builder.load(pointer, align=context.get_abi_alignment(vector.element))
        product = builder.fmul(_broadcast(builder, vector, w_v), loaded, flags=_FAST)
        total = builder.fadd(_vector(builder, vector, acc_t), product, flags=_FAST)
        out = ir.Constant(context.get_value_type(quad), ir.Undefined)
        for lane in range(4):
            out = builder.insert_value(out, builder.extract_element(total, ir.Constant(_I32, lane)), lane)
        return out

    return sig, codegen


@intrinsic
def add4(typingctx, a, q, w, g):
    """``a[q : q + 4] += w · g`` (see the module docstring)."""
    _check(a)
    sig = types.void(a, types.intp, a.dtype, types.UniTuple(a.dtype, 4))

    def codegen(context, builder, signature, args):
        a_v, q_v, w_v, g_t = args
        pointer, vector = _lanes_pointer(context, builder, signature.args[0], a_v, q_v)
        align = context.get_abi_alignment(vector.element)
        product = builder.fmul(_broadcast(builder, vector, w_v), _vector(builder, vector, g_t), flags=_FAST)
        builder.store(builder.fadd(builder.load(pointer, align=align), product, flags=_FAST), pointer, align=align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch_w(typingctx, a, q):
    """Prefetch the cache line of ``a[q]`` for writing (``llvm.prefetch``, write, keep in all levels,
    data; see the module docstring)."""
    _check(a)
    sig = types.void(a, types.intp)

    def codegen(context, builder, signature, args):
        a_v, q_v = args
        data = context.make_array(signature.args[0])(context, builder, a_v).data
        pointer = builder.bitcast(builder.gep(data, [q_v]), ir.IntType(8).as_pointer())
        kind = ir.FunctionType(ir.VoidType(), [pointer.type, _I32, _I32, _I32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [pointer.type], kind)
        builder.call(fn, [pointer, ir.Constant(_I32, 1), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return sig, codegen
