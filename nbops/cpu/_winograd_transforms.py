"""The transforms of nbops/cpu/_winograd.py as LLVM vector code: each algorithm's three matrices
(B^T: a patch of input to entries, G: a 3-tap kernel to entries, A^T: entries to outputs, in one
dimension; a block's rows and then its columns in two) and the intrinsics generated from them, L
blocks side by side in the lanes of a vector (L = 16 float32, 8 float64).

    KIND  algorithm                           patch  step  entries  outputs
    0     F23: F(2, 3), stride 1              4      2     4        2
    1     S2: stride 2                        5      4     5        2
    2     S2T: stride 2 transposed, P even    3      2     5        4
    3     S2T: stride 2 transposed, P odd     3      2     5        4

(patch: input values per block and dimension; step: between the patches of neighbouring blocks;
outputs: per block and dimension.) S2T computes the input gradient of a stride-2 convolution (or
conv_transpose2d at stride 2) with padding P: grad_x(p) = sum over 2k + m - P = p of g(m) dy(k),
so with s = p + P, even s takes g0 dy(s/2) + g2 dy(s/2 - 1) (F(2, 2) on the taps g2, g0: three
products for two outputs) and odd s takes g1 dy((s - 1)/2) (one each). A block of four grad_x
positions reads three values a, b, c of dy (at 2i - 1 + P/2 for P even, 2i + (P - 1)/2 for P odd:
the caller's offset -((P - 1) // 2)); its entries are (a - b, b, c - b, then b and c, or a and b)
times (g2, g0 + g2, g0, g1, g1), and its outputs (P even: even, odd, even, odd positions of s)

    o0 = m0 + m1,  o1 = m3,  o2 = m1 + m2,  o3 = m4        (P odd: m3, m0 + m1, m4, m1 + m2)

25 products for 16 outputs of a 4x4 block, not 36. In S2 and S2T, G's rows 3 and 4 are equal (both
g1): U has 16 distinct entries (_winograd.py's _entry).
"""

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._lanes import _Lanes, float_arrays, intrinsic_arguments

_G2 = ((0, 0, 1), (1, 0, 1), (1, 0, 0), (0, 1, 0))  # (S2T's G: g2, g0 + g2, g0, g1; a fifth row, g1 again)
KINDS = (
    {  # F23
        "B": ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        "G": ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        "A": ((1, 1, 1, 0), (0, 1, -1, -1)),
        "step": 2,
    },
    {  # S2
        "B": ((1, 0, -1, 0, 0), (0, 0, 1, 0, 0), (0, 0, -1, 0, 1), (0, 1, 0, 0, 0), (0, 0, 0, 1, 0)),
        "G": ((1, 0, 0), (1, 0, 1), (0, 0, 1), (0, 1, 0)),  # (and a fifth row, the fourth again)
        "A": ((1, 1, 0, 1, 0), (0, 1, 1, 0, 1)),
        "step": 4,
    },
    {  # S2T, P even
        "B": ((1, -1, 0), (0, 1, 0), (0, -1, 1), (0, 1, 0), (0, 0, 1)),
        "G": _G2,
        "A": ((1, 1, 0, 0, 0), (0, 0, 0, 1, 0), (0, 1, 1, 0, 0), (0, 0, 0, 0, 1)),
        "step": 2,
    },
    {  # S2T, P odd
        "B": ((1, -1, 0), (0, 1, 0), (0, -1, 1), (1, 0, 0), (0, 1, 0)),
        "G": _G2,
        "A": ((0, 0, 0, 1, 0), (1, 1, 0, 0, 0), (0, 0, 0, 0, 1), (0, 1, 1, 0, 0)),
        "step": 2,
    },
)


def _combine(b, coefficients, values, half):
    """sum_k coefficients[k] * values[k] (coefficients 0, +-1, or +-1/2 for all the non-zero ones: then
    `half` times the sum of +-values), from the first positive term on (where none is, the first term
    negated), the others in order."""
    terms = [(c, value) for c, value in zip(coefficients, values) if c]
    first = next((i for i, (c, _) in enumerate(terms) if c > 0), 0)
    total = terms[first][1] if terms[first][0] > 0 else b.fneg(terms[first][1])
    for i, (c, value) in enumerate(terms):
        if i != first:
            total = b.fadd(total, value) if c > 0 else b.fsub(total, value)
    return b.fmul(half, total) if abs(terms[0][0]) == 0.5 else total


def _deinterleave(b, vectors, phase, lanes):
    """Lanes phase, phase + s, phase + 2s, ... of the s = len(vectors) (a power of 2) vectors side by
    side: s/2 shuffles of even or odd lanes of pairs, then of their results."""
    i32 = ir.IntType(32)
    while len(vectors) > 1:
        order = ir.Constant(ir.VectorType(i32, lanes), [2 * q + phase % 2 for q in range(lanes)])
        vectors = [b.shuffle_vector(vectors[j], vectors[j + 1], order) for j in range(0, len(vectors), 2)]
        phase //= 2
    return vectors[0]


def _interleave(b, vectors, lanes):
    """The n = len(vectors) vectors interleaved (value i of vector c at n i + c), as n vectors: the n
    concatenated (shuffles), then each L of the result picked from them."""
    i32 = ir.IntType(32)
    whole = vectors
    while len(whole) > 1:  # (pairs concatenated: a vector of 2L, then 4L values)
        size = whole[0].type.count
        order = ir.Constant(ir.VectorType(i32, 2 * size), list(range(2 * size)))
        whole = [b.shuffle_vector(whole[j], whole[j + 1], order) for j in range(0, len(whole), 2)]
    n = len(vectors)
    undefined = ir.Constant(whole[0].type, ir.Undefined)
    return [
        b.shuffle_vector(whole[0], undefined, ir.Constant(ir.VectorType(i32, lanes), [(p % n) * lanes + p // n for p in range(h * lanes, (h + 1) * lanes)]))
        for h in range(n)
    ]


def _in_typing(kind, src, first, width, row, height, column, count, V, vstart, vstride):
    """winograd_in for the algorithm `kind` (KINDS): E x E entries of P x P patches spaced `step`."""
    if not float_arrays((src, V)):
        return None
    signature = types.void(src, first, width, row, height, column, count, V, vstart, vstride)
    transform, step = KINDS[kind]["B"], KINDS[kind]["step"]
    entries, size = len(transform), len(transform[0])

    def codegen(context, builder, signature, args):
        src_p, first, width, row, height, column, count, v_p, vstart, vstride = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder
        lanes = v.lanes
        nothing = ir.Constant(v.masks, [0] * lanes)
        shifts = sorted({q - q % step for q in range(size)})  # (patch columns q come in step-wide runs)
        inside = {}  # (lanes k of the step L columns column + shift + k: inside the plane and the blocks)
        for shift in shifts:
            for h in range(step):
                k = ir.Constant(v.ints, [h * lanes + q for q in range(lanes)])
                at = b.add(k, v.splat(b.add(column, v.const(shift))))
                ok = b.and_(b.icmp_signed(">=", at, v.splat(v.const(0))), b.icmp_signed("<", at, v.splat(width)))
                inside[shift, h] = b.and_(ok, b.icmp_signed("<", k, v.splat(b.mul(count, v.const(step)))))
        rows = []  # rows[r][q]: column q of row r of the L patches
        for r in range(size):
            at = b.add(row, v.const(r))
            valid = b.and_(b.icmp_signed(">=", at, v.const(0)), b.icmp_signed("<", at, height))
            start = b.add(b.add(first, b.mul(at, width)), column)
            loaded = {
                shift: [v.masked_load(v.vector, src_p, b.add(start, v.const(shift + h * lanes)), b.select(valid, inside[shift, h], nothing)) for h in range(step)]
                for shift in shifts
            }
            rows.append([_deinterleave(b, loaded[q - q % step], q % step, lanes) for q in range(size)])
        half = ir.Constant(v.vector, [0.5] * lanes)
        mask = v.lanes_below(count)
        for k in range(entries):  # B^T d (row k), times B (entry l of it)
            combined = [_combine(b, transform[k], [rows[r][q] for r in range(size)], half) for q in range(size)]
            for l in range(entries):
                v.masked_store(_combine(b, transform[l], combined, half), v_p, b.add(vstart, b.mul(vstride, v.const(entries * k + l))), mask)
        return context.get_dummy_value()

    return signature, codegen


def _out_typing(kind, M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w):
    """winograd_out for the algorithm `kind` (KINDS): E x E entries to n x n outputs."""
    if not float_arrays((M, bias, out)):
        return None
    signature = types.int64(M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w)
    transform = KINDS[kind]["A"]
    outputs, entries = len(transform), len(transform[0])

    def codegen(context, builder, signature, args):
        m_p, mstart, mstride, count, bias_p, j, out_p, top, valid, rows, out_w = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder
        lanes, mask = v.lanes, v.lanes_below(count)
        m = [v.masked_load(v.vector, m_p, b.add(mstart, b.mul(mstride, v.const(e))), mask) for e in range(entries * entries)]
        offset = v.broadcast(bias_p, j)
        nans = ir.Constant(v.masks, [0] * lanes)  # (lanes that stored a NaN)
        for a in range(outputs):
            row = [_combine(b, transform[a], [m[entries * r + q] for r in range(entries)], None) for q in range(entries)]  # row a of A^T m
            values = [b.fadd(_combine(b, transform[c], row, None), offset) for c in range(outputs)]  # times A
            inside = b.select(b.icmp_signed("<", v.const(a), rows), valid, v.const(0))
            at = b.add(top, b.mul(out_w, v.const(a)))
            for h, chunk in enumerate(_interleave(b, values, lanes)):  # (output column n i + c: L per store)
                stored = v.lanes_below(b.sub(inside, v.const(h * lanes)))
                v.masked_store(chunk, out_p, b.add(at, v.const(h * lanes)), stored)
                nans = b.or_(nans, b.and_(stored, b.fcmp_unordered("uno", chunk, chunk)))
        return b.zext(b.icmp_unsigned("!=", b.bitcast(nans, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), 0)), v.i64)

    return signature, codegen


def _weights_typing(kind, w, base, tap_step, count, packed, pstart, pstride):
    """winograd_weights for the algorithm `kind` (KINDS): P x P entries of each 3x3 kernel (its G's
    distinct rows)."""
    if not float_arrays((w, packed)):
        return None
    signature = types.void(w, base, tap_step, count, packed, pstart, pstride)
    transform = KINDS[kind]["G"]
    size = len(transform)

    def codegen(context, builder, signature, args):
        w_p, base, tap_step, count, packed_p, pstart, pstride = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder
        mask = v.lanes_below(count)
        g = [v.masked_load(v.vector, w_p, b.add(base, b.mul(tap_step, v.const(t))), mask) for t in range(9)]
        half = ir.Constant(v.vector, [0.5] * v.lanes)
        columns = [[_combine(b, row, (g[l], g[3 + l], g[6 + l]), half) for row in transform] for l in range(3)]  # G g, column by column
        for k in range(size):
            for l, row in enumerate(transform):  # row k of G g, times G^T
                value = _combine(b, row, (columns[0][k], columns[1][k], columns[2][k]), half)
                v.masked_store(value, packed_p, b.add(pstart, b.mul(pstride, v.const(size * k + l))), mask)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def winograd_dy(typingctx, grads, start, right, below, out_w, Z, zstart, zrow):
    """Z(zstart + e * zrow + s) = (A dY A^T)(k, l), e = 4k + l (F23's A), for the 2L channels s < 2L of
    a block of grad_output in blocks of 2L channels (grads (N, J, H_out * W_out, 2L), _channel_blocks):
    dY the 2x2 block whose top left value is at grads(start + s), its right column only where `right`
    and its bottom row only where `below` (else zeros, not read); the weight gradient's transform
    (nbops/cpu/_winograd_grad.py). Two vectors of L channels: 4 masked loads each, the sums, 16
    stores."""
    if not float_arrays((grads, Z)):
        return None
    signature = types.void(grads, start, right, below, out_w, Z, zstart, zrow)
    transform = KINDS[0]["A"]
    entries = len(transform[0])

    def codegen(context, builder, signature, args):
        g_p, start, right, below, out_w, z_p, zstart, zrow = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder
        wide = v.const(2 * v.lanes)
        every = ir.Constant(v.masks, [1] * v.lanes)
        nothing = ir.Constant(v.masks, [0] * v.lanes)
        has_right, has_below = (b.icmp_signed("!=", flag, v.const(0)) for flag in (right, below))
        masks = (every, b.select(has_right, every, nothing), b.select(has_below, every, nothing), b.select(b.and_(has_right, has_below), every, nothing))
        shifts = (v.const(0), wide, b.mul(out_w, wide), b.mul(b.add(out_w, v.const(1)), wide))
        for half in range(2):
            g00, g01, g10, g11 = (v.masked_load(v.vector, g_p, b.add(b.add(start, shift), v.const(half * v.lanes)), mask) for shift, mask in zip(shifts, masks))
            for k in range(entries):  # (A dY) row k: column k of A^T against dY's rows; times A^T along it
                column = (transform[0][k], transform[1][k])
                c0, c1 = _combine(b, column, (g00, g10), None), _combine(b, column, (g01, g11), None)
                for l in range(entries):
                    at = b.add(b.add(zstart, b.mul(zrow, v.const(entries * k + l))), v.const(half * v.lanes))
                    b.store(_combine(b, (transform[0][l], transform[1][l]), (c0, c1), None), v.at(z_p, at), align=v.size)
        return context.get_dummy_value()

    return signature, codegen


def _intrinsics(kind):
    """The three intrinsics of the algorithm `kind` (KINDS), for transform_in, transform_out and
    transform_weights to pick from."""

    def winograd_in(typingctx, src, first, width, row, height, column, count, V, vstart, vstride):
        return _in_typing(kind, src, first, width, row, height, column, count, V, vstart, vstride)

    def winograd_out(typingctx, M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w):
        return _out_typing(kind, M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w)

    def winograd_weights(typingctx, w, base, tap_step, count, packed, pstart, pstride):
        return _weights_typing(kind, w, base, tap_step, count, packed, pstart, pstride)

    return intrinsic(winograd_in), intrinsic(winograd_out), intrinsic(winograd_weights)


(_in0, _out0, _weights0), (_in1, _out1, _weights1), (_in2, _out2, _weights2), (_in3, _out3, _) = (_intrinsics(kind) for kind in range(4))


@njit(inline="always")
def transform_in(kind, src, first, width, row, height, column, count, V, vstart, vstride):
    """V(vstart + e * vstride + i) = (B^T d_i B)(k, l), e = E k + l, for i < count <= L blocks side by
    side: d_i(r, q) = src(first + (row + r) * width + column + step i + q), the P x P patches of a plane
    of `height` rows of `width` (from `first`) at (row, column + step i), zero where that falls outside
    it (the padding: those lanes are not read); B, P, E and step those of `kind` (KINDS). Each patch
    row: `step` masked loads of L values for each run of `step` columns, split `step` ways (shuffles);
    then the sums and E^2 masked stores."""
    if kind == 0:
        _in0(src, first, width, row, height, column, count, V, vstart, vstride)
    elif kind == 1:
        _in1(src, first, width, row, height, column, count, V, vstart, vstride)
    elif kind == 2:
        _in2(src, first, width, row, height, column, count, V, vstart, vstride)
    else:
        _in3(src, first, width, row, height, column, count, V, vstart, vstride)


@njit(inline="always")
def transform_out(kind, M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w):
    """For i < count <= L blocks side by side, m_i(e) = M(mstart + e * mstride + i): out(top + a out_w
    + n i + c) = bias(j) + (A^T m_i A)(a, c) for the n x n outputs of a block (A, n of `kind`), only the
    first `valid` values of each of its first `rows` rows; returns 1 where it stored a NaN, else 0.
    Vectors of L blocks: E^2 masked loads, the sums, the interleaves (shuffles) and n masked stores per
    row."""
    if kind == 0:
        return _out0(M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w)
    if kind == 1:
        return _out1(M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w)
    if kind == 2:
        return _out2(M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w)
    return _out3(M, mstart, mstride, count, bias, j, out, top, valid, rows, out_w)


@njit(inline="always")
def transform_weights(kind, w, base, tap_step, count, packed, pstart, pstride):
    """packed(pstart + e * pstride + i) = (G g_i G^T)(k, l), e = 4k + l (G's four distinct rows: all
    of F23's, the first four of the others'), for lanes i < count <= L, where g_i(m, l) = w(base + i +
    (3m + l) * tap_step): L output channels side by side in w (nbops/cpu/_winograd.py's
    _winograd_weights transposes them there), tap_step L, or -L from the last tap for the turned kernel
    of F23's input gradient. 9 masked loads, the transform, 16 masked stores."""
    if kind == 0:
        _weights0(w, base, tap_step, count, packed, pstart, pstride)
    elif kind == 1:
        _weights1(w, base, tap_step, count, packed, pstart, pstride)
    else:
        _weights2(w, base, tap_step, count, packed, pstart, pstride)
