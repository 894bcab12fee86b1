"""The LLVM vector code that the register tiles (nbops/cpu/_tile.py) share: _Lanes, the vector of a
dtype (L = 16 float32 lanes or 8 float64) with its fused multiply-add, broadcasts, masked adds and the
loop over taps whose sums stay in registers; gather_lanes, a masked gather (the weight packing's
transposing read); and buffers on a cache line (_empty_aligned)."""

import threading

import numpy as np
from llvmlite import ir
from numba import config, get_thread_id, njit, types
from numba.core import cgutils
from numba.extending import intrinsic


class _Lanes:
    """What the tiles' codegen shares: the vector of `dtype` (L = 16 float32 lanes or 8 float64), its
    fused multiply-add, int64 constants, scalar broadcasts, vector pointers, and the loop over taps
    whose sums stay in registers (tap_loop)."""

    def __init__(self, builder, dtype):
        self.builder = builder
        single = dtype == types.float32
        self.lanes, self.size = (16, 4) if single else (8, 8)
        self.i32, self.i64 = ir.IntType(32), ir.IntType(64)
        self.vector = ir.VectorType(ir.FloatType() if single else ir.DoubleType(), self.lanes)
        self.ints = ir.VectorType(self.i64, self.lanes)
        self.masks = ir.VectorType(ir.IntType(1), self.lanes)
        self.zero = ir.Constant(self.vector, [0.0] * self.lanes)
        self.suffix = f"v{self.lanes}{'f32' if single else 'f64'}"  # (the intrinsics' names for self.vector)
        self.fma_function = self.function(f"llvm.fma.{self.suffix}", self.vector, [self.vector] * 3)

    def function(self, name, result, arguments):  # an LLVM intrinsic, declared once per module
        return cgutils.get_or_insert_function(self.builder.module, ir.FunctionType(result, arguments), name)

    def const(self, value):
        return ir.Constant(self.i64, value)

    def fma(self, a, b, c):
        return self.builder.call(self.fma_function, [a, b, c])

    def broadcast(self, pointer, index):  # the scalar at pointer + index in every lane
        b = self.builder
        undefined = ir.Constant(self.vector, ir.Undefined)
        value = b.insert_element(undefined, b.load(b.gep(pointer, [index])), ir.Constant(self.i32, 0))
        return b.shuffle_vector(value, undefined, ir.Constant(ir.VectorType(self.i32, self.lanes), [0] * self.lanes))

    def at(self, pointer, index):  # a vector pointer at pointer + index (no alignment assumed)
        return self.builder.bitcast(self.builder.gep(pointer, [index]), self.vector.as_pointer())

    def outer(self, pointer, indices, vectors, sums):
        """One step of an outer-product tile: row r of sums += the scalar at pointer + indices[r],
        broadcast, times each of `vectors` (each broadcast next to its multiply-adds)."""
        updated = []
        for r, index in enumerate(indices):
            value = self.broadcast(pointer, index)
            updated.append([self.fma(value, vector, sums[r][c]) for c, vector in enumerate(vectors)])
        return updated

    def add_to(self, pointer, index, value):  # *(pointer + index) += value, one vector
        address = self.at(pointer, index)
        self.builder.store(self.builder.fadd(self.builder.load(address, align=self.size), value), address, align=self.size)

    def masked_load(self, kind, pointer, index, mask):
        """The vector of `kind` (self.vector, or self.ints: int64 lanes) at pointer + index in the lanes
        where mask is set, 0 in the others (which are not read)."""
        name, size = (self.suffix, self.size) if kind is self.vector else (f"v{self.lanes}i64", 8)
        load = self.function(f"llvm.masked.load.{name}.p0", kind, [ir.PointerType(), self.i32, self.masks, kind])
        address = self.builder.bitcast(self.builder.gep(pointer, [index]), ir.PointerType())
        return self.builder.call(load, [address, ir.Constant(self.i32, size), mask, ir.Constant(kind, [0] * self.lanes)])

    def masked_store(self, value, pointer, index, mask):  # value's lanes where mask is set to pointer + index
        store = self.function(f"llvm.masked.store.{self.suffix}.p0", ir.VoidType(), [self.vector, ir.PointerType(), self.i32, self.masks])
        address = self.builder.bitcast(self.builder.gep(pointer, [index]), ir.PointerType())
        self.builder.call(store, [value, address, ir.Constant(self.i32, self.size), mask])

    def masked_add_to(self, pointer, index, value, mask):  # add_to in the lanes where mask is set
        total = self.builder.fadd(self.masked_load(self.vector, pointer, index, mask), value)
        self.masked_store(total, pointer, index, mask)

    def splat(self, value):  # an int64 value in every lane
        b = self.builder
        undefined = ir.Constant(self.ints, ir.Undefined)
        one = b.insert_element(undefined, value, ir.Constant(self.i32, 0))
        return b.shuffle_vector(one, undefined, ir.Constant(ir.VectorType(self.i32, self.lanes), [0] * self.lanes))

    def lanes_below(self, count):  # the mask of the lanes c < count
        return self.builder.icmp_signed("<", ir.Constant(self.ints, list(range(self.lanes))), self.splat(count))

    def prefetch_tap(self, pointer, start, offsets, t, ntaps, distance, lines):
        """Prefetch (into L1) `lines` cache lines from pointer + start + offsets(t + distance), the tap
        `distance` ahead (the last tap's near the end of the taps)."""
        b, i32 = self.builder, self.i32
        ahead = b.add(t, self.const(distance))
        last = b.sub(ntaps, self.const(1))
        ahead = b.select(b.icmp_signed("<", ahead, last), ahead, last)
        future = b.add(start, b.load(b.gep(offsets, [ahead])))
        byte = ir.IntType(8).as_pointer()
        function = self.function("llvm.prefetch.p0i8", ir.VoidType(), [byte, i32, i32, i32])
        for line in range(lines):
            address = b.bitcast(b.gep(pointer, [b.add(future, self.const(64 // self.size * line))]), byte)
            b.call(function, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])

    def loop(self, count, step, body, carried=(), name="loop"):
        """for p = 0, step, ... < count: carried = body(p, carried), in LLVM IR (count > 0; the
        carried values are phi nodes); returns the carried values after the last step."""
        b = self.builder
        entry = b.basic_block
        loop, done = b.append_basic_block(f"{name}.body"), b.append_basic_block(f"{name}.done")
        b.branch(loop)
        b.position_at_end(loop)
        p = b.phi(self.i64)
        p.add_incoming(self.const(0), entry)
        values = [b.phi(c.type) for c in carried]
        for phi, c in zip(values, carried):
            phi.add_incoming(c, entry)
        updated = body(p, values)
        after = b.basic_block
        p_next = b.add(p, self.const(step))
        p.add_incoming(p_next, after)
        for phi, u in zip(values, updated):
            phi.add_incoming(u, after)
        b.cbranch(b.icmp_signed("<", p_next, count), loop, done)
        b.position_at_end(done)
        return updated

    def tap_loop(self, ntaps, rows, columns, step):
        """for t < ntaps: sums = step(t, sums), sums a rows x columns tile of vectors that starts at 0
        and lives in registers (phi nodes); returns the final tile (ntaps >= 1)."""

        def body(t, flat):
            sums = [flat[r * columns : (r + 1) * columns] for r in range(rows)]
            return [value for row in step(t, sums) for value in row]

        flat = self.loop(ntaps, 1, body, [self.zero] * (rows * columns), "taps")
        return [flat[r * columns : (r + 1) * columns] for r in range(rows)]


def float_arrays(arrays):
    """Whether `arrays` (an intrinsic's argument types) are arrays of one float dtype, float32 or
    float64."""
    return all(isinstance(a, types.Array) for a in arrays) and arrays[0].dtype in (types.float32, types.float64) and all(a.dtype == arrays[0].dtype for a in arrays)


def intrinsic_arguments(context, builder, signature, args):
    """An intrinsic's arguments as its codegen uses them: each array as a pointer to its data, each
    integer cast to int64, in the order of the signature."""
    values = []
    for kind, value in zip(signature.args, args):
        if isinstance(kind, types.Array):
            values.append(cgutils.create_struct_proxy(kind)(context, builder, value=value).data)
        else:
            values.append(context.cast(builder, value, kind, types.int64))
    return values


@intrinsic
def gather_lanes(typingctx, source, indices, istart, shift, dst, dstart, count):
    """dst(dstart + c) = source(indices(istart + c) + shift) for c < count <= L: one masked gather
    (vgatherqps / vgatherqpd) and one masked store, lanes c >= count untouched."""
    if not float_arrays((source, dst)) or not isinstance(indices, types.Array) or indices.dtype != types.int64:
        return None
    signature = types.void(source, indices, istart, shift, dst, dstart, count)

    def codegen(context, builder, signature, args):
        src_p, idx_p, istart, shift, dst_p, dstart, count = intrinsic_arguments(context, builder, signature, args)
        v = _Lanes(builder, signature.args[0].dtype)
        b, lanes = builder, v.lanes
        mask = v.lanes_below(count)
        index = v.masked_load(v.ints, idx_p, istart, mask)
        offsets = b.mul(b.add(index, v.splat(shift)), ir.Constant(v.ints, [v.size] * lanes))
        addresses = b.inttoptr(b.add(v.splat(b.ptrtoint(src_p, v.i64)), offsets), ir.VectorType(ir.PointerType(), lanes))
        gather = v.function(f"llvm.masked.gather.{v.suffix}.v{lanes}p0", v.vector, [addresses.type, v.i32, v.masks, v.vector])
        values = b.call(gather, [addresses, ir.Constant(v.i32, v.size), mask, ir.Constant(v.vector, ir.Undefined)])
        v.masked_store(values, dst_p, dstart, mask)
        return context.get_dummy_value()

    return signature, codegen


def _transposed(v, src_p, sstart, sstride, rows, columns):
    """The L x L block at src_p + sstart, row i at + i * sstride, transposed in registers: L vectors,
    vector c holding column c (log2(L) rounds of L shuffles, each swapping one bit of the row index
    with the same bit of the lane index). Only rows i < rows and columns c < columns are read (masked
    loads, rows past the last reading it again): a block at the end of an array reads nothing past
    it."""
    b, lanes = v.builder, v.lanes
    last = b.sub(rows, v.const(1))
    within = v.lanes_below(columns)
    block = []
    for i in range(lanes):
        row = b.select(b.icmp_signed("<", v.const(i), rows), v.const(i), last)
        block.append(v.masked_load(v.vector, src_p, b.add(sstart, b.mul(row, sstride)), within))
    step = 1
    while step < lanes:
        low = [j if not j & step else lanes + j - step for j in range(lanes)]
        high = [j + step if not j & step else lanes + j for j in range(lanes)]
        for i in range(lanes):
            if not i & step:
                a, c = block[i], block[i + step]
                block[i] = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(v.i32, lanes), low))
                block[i + step] = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(v.i32, lanes), high))
        step *= 2
    return block


def _transpose_typing(source, dst, signature, column_store):
    """The typing and codegen of the transposing intrinsics: the block of `_transposed`, then
    store(c, column c's vector) for c < columns, store = column_store(v, dst pointer, mask of the rows,
    the intrinsic's other arguments) (what all columns share is computed there, once)."""
    if not float_arrays((source, dst)):
        return None

    def codegen(context, builder, signature, args):
        src_p, sstart, sstride, dst_p, *rest, rows, columns = intrinsic_arguments(context, builder, signature, args)
        v = _Lanes(builder, signature.args[0].dtype)
        block = _transposed(v, src_p, sstart, sstride, rows, columns)
        store = column_store(v, dst_p, v.lanes_below(rows), *rest)
        for c in range(v.lanes):
            with builder.if_then(builder.icmp_signed("<", v.const(c), columns)):
                store(c, block[c])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def transpose_lanes(typingctx, source, sstart, sstride, dst, dstart, dstride, rows, columns):
    """dst(dstart + c * dstride + i) = source(sstart + i * sstride + c) for i < rows <= L and
    c < columns <= L: an L x L block transposed in registers (L loads, log2(L) rounds of L shuffles,
    L masked stores), where a gather per column read L cache lines for L values. Rows i >= rows are
    not read."""

    def column_store(v, dst_p, mask, dstart, dstride):
        return lambda c, values: v.masked_store(values, dst_p, v.builder.add(dstart, v.builder.mul(v.const(c), dstride)), mask)

    signature = types.void(source, sstart, sstride, dst, dstart, dstride, rows, columns)
    return _transpose_typing(source, dst, signature, column_store)


@intrinsic
def transpose_scatter(typingctx, source, sstart, sstride, dst, dstart, dstride, spots, pstart, rows, columns):
    """dst(dstart + c * dstride + spots(pstart + i)) = source(sstart + i * sstride + c) for i < rows <= L
    and c < columns <= L: transpose_lanes into places of any spacing (a strided view's positions),
    each column by one masked scatter (vscatterqps / vscatterqpd)."""
    if not isinstance(spots, types.Array) or spots.dtype != types.int64:
        return None

    def column_store(v, dst_p, mask, dstart, dstride, spots_p, pstart):
        b = v.builder
        # the rows' places, in bytes from dst_p + dstart (loaded once for the block's columns)
        places = b.add(v.masked_load(v.ints, spots_p, pstart, mask), v.splat(dstart))
        places = b.add(v.splat(b.ptrtoint(dst_p, v.i64)), b.mul(places, ir.Constant(v.ints, [v.size] * v.lanes)))
        scatter = v.function(f"llvm.masked.scatter.{v.suffix}.v{v.lanes}p0", ir.VoidType(), [v.vector, ir.VectorType(ir.PointerType(), v.lanes), v.i32, v.masks])

        def store(c, values):  # column c: dstride * c elements further
            column = b.add(places, v.splat(b.mul(v.const(c * v.size), dstride)))
            b.call(scatter, [values, b.inttoptr(column, ir.VectorType(ir.PointerType(), v.lanes)), ir.Constant(v.i32, v.size), mask])

        return store

    signature = types.void(source, sstart, sstride, dst, dstart, dstride, spots, pstart, rows, columns)
    return _transpose_typing(source, dst, signature, column_store)


@njit(cache=True)
def _empty_aligned(count, like):
    """An uninitialised 1-D array of `count` elements of like's dtype starting on a 64-byte boundary (a
    cache line: the tiles' 512-bit loads and stores of it then never straddle two lines; +0-8% on the
    forward, +6-10% on the weight gradient's grad_output blocks)."""
    buffer = np.empty(count + 64 // like.itemsize, dtype=like.dtype)
    skip = ((-buffer.ctypes.data) % 64) // like.itemsize
    return buffer[skip : skip + count]


def _aligned_empty(shape, dtype):
    """_empty_aligned from Python: an uninitialised array of `shape` on a 64-byte boundary (NumPy puts
    large arrays 16 bytes past one)."""
    return _empty_aligned(int(np.prod(shape)), np.empty(0, dtype=dtype)).reshape(shape)


def flat_view(array):
    """array itself, flat, where it is C-contiguous; else an empty array of its dtype (for kernels that
    then take a slower path through the array's own strides)."""
    return array.reshape(-1) if array.flags.c_contiguous else np.empty(0, dtype=array.dtype)


_workspace = threading.local()


KEPT_BYTES = 256 << 20  # largest buffer that _reused keeps for the next call


def _reused(name, shape, dtype):
    """An uninitialised array of `shape` on a cache line, the same memory on each call in this thread
    while it is big enough (up to KEPT_BYTES; larger ones are fresh each time): Winograd's V and M are
    6-50 MB on ResNet's layers, and fresh arrays of that size were mapped and page-faulted anew on
    every call (a third of the time at 28x28 and 56x56). Only for buffers that do not outlive the
    call."""
    arrays = _workspace.__dict__.setdefault("arrays", {})
    size, key = int(np.prod(shape)), (name, np.dtype(dtype).str)
    if size * np.dtype(dtype).itemsize > KEPT_BYTES:
        return np.empty(shape, dtype=dtype)
    if key not in arrays or arrays[key].size < size:
        arrays[key] = _aligned_empty((size,), dtype)
    return arrays[key][:size].reshape(shape)


def _thread_rows(name, size, dtype):
    """A row of `size` values for each of Numba's threads (kernels pick theirs by
    numba.get_thread_id), kept like _reused. Calling get_thread_id here also starts Numba's threading
    layer, which registers the function that compiled get_thread_id calls: a kernel loaded from the
    on-disk cache skips the typing that starts it, and called address 0 in a fresh process."""
    get_thread_id()
    return _reused(name, (config.NUMBA_NUM_THREADS, size), dtype)
