// A stack of LSTM layers stepped over many independent rows (coordinates), with an optional
// linear output on the top layer, forward and backward, as two CPU ops.
//
// The math is lstm_step's in l2l_tf/cells/coordinatewise_lstm.py: gates ordered input, forget,
// cell, output; the weights arrive pre-scaled so that one tanh gives all four gates
// (sigmoid(z) = 0.5 tanh(z / 2) + 0.5). What the ops add is locality: rows are processed in
// blocks of a hundred or so, and each block runs every layer (matmul, gate math, tanh) and the
// output while it is in cache, instead of one pass over all rows per TensorFlow op; the
// backward op adds the gradients that meet at a layer's output in place (no AddN) and
// accumulates the weight gradients per thread, summed once at the end.
//
// L2lLstmStack(x, h: L, c: L, weights: L, bias: L, output_kernel)
//     -> (projection, new_h: L, new_c: L)
//   x [rows, features]; layer l has h, c [rows, units_l], weights [in_l + units_l, 4 units_l]
//   (its kernel over its recurrent kernel, in_0 = features, in_l = units_{l-1}) and bias
//   [4 units_l], both pre-scaled; output_kernel [units_top, outputs] (outputs may be 0);
//   projection = new_h_top output_kernel.
// L2lLstmStackGrad(d_projection, d_h: L, d_c: L, x, h: L, c: L, new_h: L, weights: L,
//                  bias: L, output_kernel)
// The backward op recomputes each block's gates from [in, h] (one more small matmul per
// layer) instead of reading them back: these ops are bound by memory traffic, and what the
// forward op writes is only the new state.
//     -> (d_x, d_h_prev: L, d_c_prev: L, d_weights: L, d_bias: L, d_output_kernel)

// Eigen's AVX512-FP16 packet code does not compile with GCC 12; float16 is not used here.
#ifdef __AVX512FP16__
#undef __AVX512FP16__
#endif

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace l2l_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
namespace shape_inference = ::tensorflow::shape_inference;

template <typename T>
using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using RowsMap = Eigen::Map<Rows<T>>;
template <typename T>
using ConstRowsMap = Eigen::Map<const Rows<T>>;
template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

// Rows per block: a block's u, t and gradients (a few hundred floats per row) stay in L2.
constexpr int64_t kBlockRows = 64;

constexpr int64_t kShardsPerThread = 8;

// The number of shards ForEachShard splits `rows` into: a few per intra-op thread, so that a
// thread held up by another op's work does not leave the others waiting at the end.
int64_t NumShards(OpKernelContext* context, int64_t rows) {
  const int64_t num_blocks = (rows + kBlockRows - 1) / kBlockRows;
  const int64_t threads = context->device()->tensorflow_cpu_worker_threads()->num_threads;
  return std::max<int64_t>(1, std::min<int64_t>(kShardsPerThread * threads, num_blocks));
}

// Splits [0, rows) into NumShards contiguous runs of whole blocks and runs
// fn(shard, first_row, end_row) for each on the intra-op threads; `shard` indexes the caller's
// per-shard accumulators.
template <typename Fn>
void ForEachShard(OpKernelContext* context, int64_t rows, int64_t cost_per_row, Fn fn) {
  const int64_t num_shards = NumShards(context, rows);
  const int64_t num_blocks = (rows + kBlockRows - 1) / kBlockRows;
  const int64_t blocks_per_shard = (num_blocks + num_shards - 1) / num_shards;
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(
      num_shards, workers->workers, num_shards, cost_per_row * blocks_per_shard * kBlockRows,
      [&](int64_t first, int64_t last) {
        for (int64_t shard = first; shard < last; ++shard) {
          const int64_t begin = std::min(rows, shard * blocks_per_shard * kBlockRows);
          const int64_t end = std::min(rows, (shard + 1) * blocks_per_shard * kBlockRows);
          if (begin < end) fn(shard, begin, end);
        }
      });
}

// The shapes of one stack, read from (and checked against) the op's inputs.
struct StackShape {
  int64_t rows = 0, features = 0, outputs = 0;
  std::vector<int64_t> in, units;  // per layer: input width (features or the layer below's units)

  int64_t layers() const { return static_cast<int64_t>(units.size()); }
  int64_t k(int64_t l) const { return in[l] + units[l]; }
  int64_t gates(int64_t l) const { return 4 * units[l]; }
};

::tensorflow::Status ReadShape(const Tensor& x, const ::tensorflow::OpInputList& h,
                               const ::tensorflow::OpInputList& c,
                               const ::tensorflow::OpInputList& weights,
                               const ::tensorflow::OpInputList* bias, const Tensor& output_kernel,
                               StackShape* shape) {
  if (x.dims() != 2) return InvalidArgument("x must be a matrix, got ", x.shape().DebugString());
  shape->rows = x.dim_size(0);
  shape->features = x.dim_size(1);
  int64_t in = shape->features;
  for (int l = 0; l < h.size(); ++l) {
    if (c[l].dims() != 2 || c[l].dim_size(0) != shape->rows || h[l].shape() != c[l].shape()) {
      return InvalidArgument("layer ", l, ": h and c must be [rows, units] with the rows of x");
    }
    const int64_t units = c[l].dim_size(1);
    if (weights[l].shape() != TensorShape({in + units, 4 * units}) ||
        (bias && (*bias)[l].shape() != TensorShape({4 * units}))) {
      return InvalidArgument("layer ", l, ": weights ", weights[l].shape().DebugString(),
                             " (and bias) do not fit ", in, " inputs and ", units, " units");
    }
    shape->in.push_back(in);
    shape->units.push_back(units);
    in = units;
  }
  if (output_kernel.dims() != 2 || output_kernel.dim_size(0) != in) {
    return InvalidArgument("output_kernel must be [", in, ", outputs], got ",
                           output_kernel.shape().DebugString());
  }
  shape->outputs = output_kernel.dim_size(1);
  return ::tensorflow::OkStatus();
}

// The three products of a step, on one block of n rows. Each has a register-tiled kernel on
// Eigen's SIMD packets (no packing: the weights are small and stay in L1) for widths that are
// whole packets, and a plain Eigen fallback for other widths.
template <typename T>
using Packet = typename Eigen::internal::packet_traits<T>::type;
template <typename T>
constexpr int64_t kPacket = Eigen::internal::unpacket_traits<Packet<T>>::size;
#define L2L_UNROLL _Pragma("GCC unroll 16")  // tile loops: accumulators must stay in registers
constexpr int64_t kTileRows = 4;  // rows of a register tile: 4 x 5 packets = 20 accumulators

// acc[i] += s * w for rows i of a tile (one packet column).
template <typename T, int R, int NV>
EIGEN_ALWAYS_INLINE void TileUpdate(Packet<T> (&acc)[R][NV], const T* w, const T* const* row_ptrs,
                                    int64_t column) {
  using namespace Eigen::internal;
  Packet<T> wv[NV];
  L2L_UNROLL for (int v = 0; v < NV; ++v) wv[v] = ploadu<Packet<T>>(w + v * kPacket<T>);
  L2L_UNROLL for (int i = 0; i < R; ++i) {
    const Packet<T> s = pset1<Packet<T>>(row_ptrs[i][column]);
    L2L_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = pmadd(s, wv[v], acc[i][v]);
  }
}

// t[n, NV * P] = tanh([x, h] w + bias) for R rows starting at `row` (x [., features], h [.,
// units]).
template <typename T, int R, int NV>
EIGEN_ALWAYS_INLINE void AffineTanhTile(const T* x, int64_t features, const T* h, int64_t units,
                                        const T* w, const T* bias, int64_t row, T* t) {
  using namespace Eigen::internal;
  constexpr int64_t width = NV * kPacket<T>;
  Packet<T> acc[R][NV];
  L2L_UNROLL for (int i = 0; i < R; ++i) L2L_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] =
      ploadu<Packet<T>>(bias + v * kPacket<T>);
  const T* x_rows[R];
  const T* h_rows[R];
  L2L_UNROLL for (int i = 0; i < R; ++i) x_rows[i] = x + (row + i) * features,
                                         h_rows[i] = h + (row + i) * units;
  for (int64_t j = 0; j < features; ++j) TileUpdate<T, R, NV>(acc, w + j * width, x_rows, j);
  for (int64_t j = 0; j < units; ++j)
    TileUpdate<T, R, NV>(acc, w + (features + j) * width, h_rows, j);
  L2L_UNROLL for (int i = 0; i < R; ++i) L2L_UNROLL for (int v = 0; v < NV; ++v)
      pstoreu(t + (row + i) * width + v * kPacket<T>, ptanh(acc[i][v]));
}

template <typename T, int NV>
void AffineTanhRows(const T* x, int64_t features, const T* h, int64_t units, const T* w,
                    const T* bias, int64_t n, T* t) {
  int64_t row = 0;
  for (; row + kTileRows <= n; row += kTileRows)
    AffineTanhTile<T, kTileRows, NV>(x, features, h, units, w, bias, row, t);
  for (; row < n; ++row) AffineTanhTile<T, 1, NV>(x, features, h, units, w, bias, row, t);
}

// out[n, NV * P] = a[n, inner] b[inner, NV * P] for R rows starting at `row`.
template <typename T, int R, int NV>
EIGEN_ALWAYS_INLINE void MatMulTile(const T* a, int64_t inner, const T* b, int64_t row, T* out) {
  using namespace Eigen::internal;
  constexpr int64_t width = NV * kPacket<T>;
  Packet<T> acc[R][NV];
  L2L_UNROLL for (int i = 0; i < R; ++i) L2L_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] =
      pset1<Packet<T>>(T(0));
  const T* a_rows[R];
  L2L_UNROLL for (int i = 0; i < R; ++i) a_rows[i] = a + (row + i) * inner;
  for (int64_t j = 0; j < inner; ++j) TileUpdate<T, R, NV>(acc, b + j * width, a_rows, j);
  L2L_UNROLL for (int i = 0; i < R; ++i) L2L_UNROLL for (int v = 0; v < NV; ++v)
      pstoreu(out + (row + i) * width + v * kPacket<T>, acc[i][v]);
}

template <typename T, int NV>
void MatMulRows(const T* a, int64_t inner, const T* b, int64_t n, T* out) {
  int64_t row = 0;
  for (; row + kTileRows <= n; row += kTileRows)
    MatMulTile<T, kTileRows, NV>(a, inner, b, row, out);
  for (; row < n; ++row) MatMulTile<T, 1, NV>(a, inner, b, row, out);
}

// d_w[k, NV * P] += u^T d_z and d_bias += column sums of d_z, over n rows; u = [x, h] by rows.
template <typename T, int NV>
void AccumulateOuterRows(const T* x, int64_t features, const T* h, int64_t units, const T* d_z,
                         int64_t n, T* d_w, T* d_bias) {
  using namespace Eigen::internal;
  constexpr int64_t width = NV * kPacket<T>;
  const int64_t k = features + units;
  const T one = T(1);
  for (int64_t j0 = 0; j0 < k + 1; j0 += kTileRows) {  // j == k is the bias: a column of ones
    const int64_t rows_in_tile = std::min<int64_t>(kTileRows, k + 1 - j0);
    // Column j of u = [x, h, 1] as a pointer and a row stride (0 for the ones, and for the
    // columns past the end of the tile, which are computed and dropped).
    const T* column[kTileRows];
    int64_t stride[kTileRows];
    L2L_UNROLL for (int i = 0; i < kTileRows; ++i) {
      const int64_t j = j0 + i;
      column[i] = j < features ? x + j : j < k ? h + (j - features) : &one;
      stride[i] = j < features ? features : j < k ? units : 0;
    }
    Packet<T> acc[kTileRows][NV];
    L2L_UNROLL for (int i = 0; i < kTileRows; ++i) L2L_UNROLL for (int v = 0; v < NV; ++v)
        acc[i][v] = pset1<Packet<T>>(T(0));
    for (int64_t row = 0; row < n; ++row) {
      Packet<T> dz[NV];
      L2L_UNROLL for (int v = 0; v < NV; ++v) dz[v] =
          ploadu<Packet<T>>(d_z + row * width + v * kPacket<T>);
      L2L_UNROLL for (int i = 0; i < kTileRows; ++i) {
        const Packet<T> s = pset1<Packet<T>>(column[i][row * stride[i]]);
        L2L_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = pmadd(s, dz[v], acc[i][v]);
      }
    }
    for (int i = 0; i < rows_in_tile; ++i) {
      T* target = j0 + i < k ? d_w + (j0 + i) * width : d_bias;
      L2L_UNROLL for (int v = 0; v < NV; ++v) {
        T* p = target + v * kPacket<T>;
        pstoreu(p, padd(ploadu<Packet<T>>(p), acc[i][v]));
      }
    }
  }
}

// Calls body(P(), j) for j in [0, count): packets of P = Packet<T> while whole ones fit, then
// half and quarter packets, then scalars (P = T): 20 floats are one 16-wide packet and one
// 4-wide, where a plain loop compiles to 20 scalar steps.
template <typename T, typename Body>
EIGEN_ALWAYS_INLINE void ForEachPacket(int64_t count, Body body) {
  using Full = Packet<T>;
  using Half = typename Eigen::internal::unpacket_traits<Full>::half;
  using Quarter = typename Eigen::internal::unpacket_traits<Half>::half;
  int64_t j = 0;
  for (; j + kPacket<T> <= count; j += kPacket<T>) body(Full(), j);
  if constexpr (!std::is_same_v<Half, Full>) {
    constexpr int64_t size = Eigen::internal::unpacket_traits<Half>::size;
    for (; j + size <= count; j += size) body(Half(), j);
  }
  if constexpr (!std::is_same_v<Quarter, Half>) {
    constexpr int64_t size = Eigen::internal::unpacket_traits<Quarter>::size;
    for (; j + size <= count; j += size) body(Quarter(), j);
  }
  for (; j < count; ++j) body(T(), j);
}

// tanh of a packet (Eigen's vectorised rational approximation, TensorFlow's Tanh op's too) or
// of a scalar.
template <typename P>
EIGEN_ALWAYS_INLINE P Tanh(const P& x) {
  if constexpr (std::is_arithmetic_v<P>) {
    return std::tanh(x);
  } else {
    return Eigen::internal::ptanh(x);
  }
}

// Gate math of one row from t = tanh(scaled z), where sigmoid(z) = 0.5 t + 0.5:
// new_c = sigmoid(f) c + sigmoid(i) g and new_h = sigmoid(o) tanh(new_c).
template <typename T>
EIGEN_ALWAYS_INLINE void CellRow(const T* tr, const T* c_prev, int64_t units, T* c_new, T* h_new) {
  using namespace Eigen::internal;
  ForEachPacket<T>(units, [&](auto tag, int64_t j) {
    using P = decltype(tag);
    const P half = pset1<P>(T(0.5));
    const P f = pmadd(half, ploadu<P>(tr + units + j), half);
    const P i = pmadd(half, ploadu<P>(tr + j), half);
    const P o = pmadd(half, ploadu<P>(tr + 3 * units + j), half);
    const P c = pmadd(f, ploadu<P>(c_prev + j), pmul(i, ploadu<P>(tr + 2 * units + j)));
    pstoreu(c_new + j, c);
    pstoreu(h_new + j, pmul(o, Tanh(c)));
  });
}

// Backward of the gate math for one row: d_z (the pre-activations' gradient, in the scaled
// form the weights use) and d_c_prev, from upstream d_h, d_c. new_c and its tanh are
// recomputed from t and c_prev.
template <typename T>
EIGEN_ALWAYS_INLINE void CellGradRow(const T* tr, const T* d_h, const T* d_c, const T* c_prev,
                                     int64_t units, T* d_z, T* d_c_prev) {
  using namespace Eigen::internal;
  ForEachPacket<T>(units, [&](auto tag, int64_t j) {
    using P = decltype(tag);
    const P half = pset1<P>(T(0.5)), one = pset1<P>(T(1));
    const P t_i = ploadu<P>(tr + j), t_f = ploadu<P>(tr + units + j);
    const P g = ploadu<P>(tr + 2 * units + j), t_o = ploadu<P>(tr + 3 * units + j);
    const P c = ploadu<P>(c_prev + j), dh = ploadu<P>(d_h + j);
    const P o = pmadd(half, t_o, half), i = pmadd(half, t_i, half), f = pmadd(half, t_f, half);
    const P tc = Tanh(pmadd(f, c, pmul(i, g)));
    const P dc = padd(ploadu<P>(d_c + j), pmul(pmul(dh, o), psub(one, pmul(tc, tc))));
    const P half_dc = pmul(half, dc);
    pstoreu(d_z + j, pmul(pmul(half_dc, g), psub(one, pmul(t_i, t_i))));
    pstoreu(d_z + units + j, pmul(pmul(half_dc, c), psub(one, pmul(t_f, t_f))));
    pstoreu(d_z + 2 * units + j, pmul(pmul(dc, i), psub(one, pmul(g, g))));
    pstoreu(d_z + 3 * units + j, pmul(pmul(pmul(half, dh), tc), psub(one, pmul(t_o, t_o))));
    pstoreu(d_c_prev + j, pmul(dc, f));
  });
}

// Calls kernel<NV>(args...) for NV = width / packet size if that is a whole number of at most
// 8; returns false (the caller falls back to Eigen) otherwise.
#define L2L_DISPATCH_PACKETS(T, width, kernel, ...) \
  [&]() -> bool {                                   \
    if ((width) % kPacket<T> != 0) return false;    \
    switch ((width) / kPacket<T>) {                 \
      case 1:                                       \
        kernel<T, 1>(__VA_ARGS__);                  \
        return true;                                \
      case 2:                                       \
        kernel<T, 2>(__VA_ARGS__);                  \
        return true;                                \
      case 3:                                       \
        kernel<T, 3>(__VA_ARGS__);                  \
        return true;                                \
      case 4:                                       \
        kernel<T, 4>(__VA_ARGS__);                  \
        return true;                                \
      case 5:                                       \
        kernel<T, 5>(__VA_ARGS__);                  \
        return true;                                \
      case 6:                                       \
        kernel<T, 6>(__VA_ARGS__);                  \
        return true;                                \
      case 7:                                       \
        kernel<T, 7>(__VA_ARGS__);                  \
        return true;                                \
      case 8:                                       \
        kernel<T, 8>(__VA_ARGS__);                  \
        return true;                                \
      default:                                      \
        return false;                               \
    }                                               \
  }()

// Rows [first, first + n) of in and h side by side: u = [in, h], [n, in_width + units].
template <typename T>
void GatherBlock(const T* in, int64_t in_width, const T* h, int64_t units, int64_t first, int64_t n,
                 Rows<T>* u) {
  u->resize(kBlockRows, in_width + units);
  u->topRows(n).leftCols(in_width) = ConstRowsMap<T>(in + first * in_width, n, in_width);
  u->topRows(n).rightCols(units) = ConstRowsMap<T>(h + first * units, n, units);
}

template <typename T>
const T* Data(const Tensor& tensor) {
  return tensor.flat<T>().data();
}
template <typename T>
T* Data(Tensor* tensor) {
  return tensor->flat<T>().data();
}

// t[n, gates] = tanh([in, h] w + bias) for rows [first, first + n) of in [., in_width] and
// h [., units]: the tiled kernel where gates is whole packets, Eigen otherwise (u: scratch).
template <typename T>
void GateTanhBlock(const T* in, int64_t in_width, const T* h, int64_t units, const T* w,
                   const T* bias, int64_t first, int64_t n, Rows<T>* u, T* t) {
  const int64_t gates = 4 * units;
  if (!L2L_DISPATCH_PACKETS(T, gates, AffineTanhRows, in + first * in_width, in_width,
                            h + first * units, units, w, bias, n, t)) {
    GatherBlock(in, in_width, h, units, first, n, u);
    RowsMap<T> z(t, n, gates);
    z.noalias() = u->topRows(n) * ConstRowsMap<T>(w, in_width + units, gates);
    z.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, gates);
    ArrayMap<T>(t, n * gates) = ArrayMap<T>(t, n * gates).tanh();
  }
}

template <typename T>
class LstmStackOp : public OpKernel {
 public:
  explicit LstmStackOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    ::tensorflow::OpInputList h, c, weights, bias;
    OP_REQUIRES_OK(context, context->input_list("h", &h));
    OP_REQUIRES_OK(context, context->input_list("c", &c));
    OP_REQUIRES_OK(context, context->input_list("weights", &weights));
    OP_REQUIRES_OK(context, context->input_list("bias", &bias));
    const Tensor& x = context->input(0);
    const Tensor& output_kernel = context->input(context->num_inputs() - 1);
    StackShape shape;
    OP_REQUIRES_OK(context, ReadShape(x, h, c, weights, &bias, output_kernel, &shape));
    const int64_t rows = shape.rows, layers = shape.layers();
    Tensor* projection;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, TensorShape({rows, shape.outputs}), &projection));
    ::tensorflow::OpOutputList new_h, new_c;
    OP_REQUIRES_OK(context, context->output_list("new_h", &new_h));
    OP_REQUIRES_OK(context, context->output_list("new_c", &new_c));
    std::vector<Tensor*> new_h_out(layers), new_c_out(layers);
    int64_t cost_per_row = 0, widest = 0;
    for (int64_t l = 0; l < layers; ++l) {
      OP_REQUIRES_OK(context, new_h.allocate(l, c[l].shape(), &new_h_out[l]));
      OP_REQUIRES_OK(context, new_c.allocate(l, c[l].shape(), &new_c_out[l]));
      cost_per_row += 4 * shape.k(l) * shape.gates(l);
      widest = std::max(widest, shape.gates(l));
    }
    if (rows == 0) return;
    const int64_t top_units = shape.units.back();
    ForEachShard(context, rows, cost_per_row, [&](int64_t, int64_t begin, int64_t end) {
      // The gates live in this block buffer only: the backward op recomputes them (memory
      // traffic, not arithmetic, bounds these ops).
      Rows<T> u, t(kBlockRows, widest);
      for (int64_t first = begin; first < end; first += kBlockRows) {
        const int64_t n = std::min(kBlockRows, end - first);
        for (int64_t l = 0; l < layers; ++l) {
          const int64_t units = shape.units[l], gates = shape.gates(l), in_width = shape.in[l];
          const T* in = l == 0 ? Data<T>(x) : Data<T>(new_h_out[l - 1]);
          T* t_block = t.data();
          GateTanhBlock(in, in_width, Data<T>(h[l]), units, Data<T>(weights[l]), Data<T>(bias[l]),
                        first, n, &u, t_block);
          const T* c_prev = Data<T>(c[l]) + first * units;
          T* c_next = Data<T>(new_c_out[l]) + first * units;
          T* h_next = Data<T>(new_h_out[l]) + first * units;
          for (int64_t row = 0; row < n; ++row) {
            CellRow(t_block + row * gates, c_prev + row * units, units, c_next + row * units,
                    h_next + row * units);
          }
        }
        if (shape.outputs > 0) {
          const T* top = Data<T>(new_h_out[layers - 1]);
          RowsMap<T>(Data<T>(projection) + first * shape.outputs, n, shape.outputs).noalias() =
              ConstRowsMap<T>(top + first * top_units, n, top_units) *
              ConstRowsMap<T>(Data<T>(output_kernel), top_units, shape.outputs);
        }
      }
    });
  }
};

template <typename T>
class LstmStackGradOp : public OpKernel {
 public:
  explicit LstmStackGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    ::tensorflow::OpInputList d_h, d_c, h, c, new_h, weights, bias;
    for (auto [name, list] : {std::pair{"d_h", &d_h},
                              {"d_c", &d_c},
                              {"h", &h},
                              {"c", &c},
                              {"new_h", &new_h},
                              {"bias", &bias},
                              {"weights", &weights}}) {
      OP_REQUIRES_OK(context, context->input_list(name, list));
    }
    const Tensor& d_projection = context->input(0);
    const Tensor* x;
    const Tensor* output_kernel;
    OP_REQUIRES_OK(context, context->input("x", &x));
    OP_REQUIRES_OK(context, context->input("output_kernel", &output_kernel));
    StackShape shape;
    OP_REQUIRES_OK(context, ReadShape(*x, h, c, weights, &bias, *output_kernel, &shape));
    const int64_t rows = shape.rows, layers = shape.layers(), outputs = shape.outputs;
    OP_REQUIRES(context, d_projection.shape() == TensorShape({rows, outputs}),
                InvalidArgument("d_projection must be [rows, outputs]"));
    for (int64_t l = 0; l < layers; ++l) {
      OP_REQUIRES(context,
                  d_h[l].shape() == c[l].shape() && d_c[l].shape() == c[l].shape() &&
                      new_h[l].shape() == c[l].shape(),
                  InvalidArgument("layer ", l, ": gradients and saved tensors do not fit"));
    }
    Tensor *d_x, *d_output_kernel;
    OP_REQUIRES_OK(context, context->allocate_output("d_x", x->shape(), &d_x));
    ::tensorflow::OpOutputList d_h_prev, d_c_prev, d_weights, d_bias;
    OP_REQUIRES_OK(context, context->output_list("d_h_prev", &d_h_prev));
    OP_REQUIRES_OK(context, context->output_list("d_c_prev", &d_c_prev));
    OP_REQUIRES_OK(context, context->output_list("d_weights", &d_weights));
    OP_REQUIRES_OK(context, context->output_list("d_bias", &d_bias));
    OP_REQUIRES_OK(context, context->allocate_output("d_output_kernel", output_kernel->shape(),
                                                     &d_output_kernel));
    std::vector<Tensor*> d_h_prev_out(layers), d_c_prev_out(layers);
    // d_u = d_z w^T is computed as d_z w_t, with w_t = w^T zero-padded to whole packets.
    std::vector<Rows<T>> w_t(layers);
    int64_t cost_per_row = 0, widest = shape.features;
    for (int64_t l = 0; l < layers; ++l) {
      OP_REQUIRES_OK(context, d_h_prev.allocate(l, c[l].shape(), &d_h_prev_out[l]));
      OP_REQUIRES_OK(context, d_c_prev.allocate(l, c[l].shape(), &d_c_prev_out[l]));
      const int64_t k = shape.k(l), padded = (k + kPacket<T> - 1) / kPacket<T> * kPacket<T>;
      w_t[l] = Rows<T>::Zero(shape.gates(l), padded);
      w_t[l].leftCols(k) = ConstRowsMap<T>(Data<T>(weights[l]), k, shape.gates(l)).transpose();
      cost_per_row += 6 * k * shape.gates(l);
      widest = std::max(widest, std::max(padded, shape.gates(l)));
    }
    const int64_t top_units = shape.units.back();
    // Per-shard accumulators: [weights; bias] of each layer, then the output kernel. Summed at
    // the end in shard order (no locks; the same sum for the same shards).
    const int64_t num_shards = NumShards(context, rows);
    std::vector<std::vector<Rows<T>>> parts(num_shards);
    for (auto& part : parts) {
      for (int64_t l = 0; l < layers; ++l)
        part.push_back(Rows<T>::Zero(shape.k(l) + 1, shape.gates(l)));
      part.push_back(Rows<T>::Zero(top_units, outputs));
    }
    if (rows > 0)
      ForEachShard(context, rows, cost_per_row, [&](int64_t shard, int64_t begin, int64_t end) {
        // d_above: the gradient arriving at the current layer's output from above, [n, units].
        Rows<T> d_z(kBlockRows, widest), d_u(kBlockRows, widest), d_above(kBlockRows, widest), u;
        Rows<T> t(kBlockRows, widest);
        std::vector<Rows<T>>& part = parts[shard];
        for (int64_t first = begin; first < end; first += kBlockRows) {
          const int64_t n = std::min(kBlockRows, end - first);
          auto above = d_above.topLeftCorner(n, top_units);
          above.setZero();
          if (outputs > 0) {
            const ConstRowsMap<T> d_proj(Data<T>(d_projection) + first * outputs, n, outputs);
            const ConstRowsMap<T> kernel(Data<T>(*output_kernel), top_units, outputs);
            const T* top = Data<T>(new_h[layers - 1]);
            above.noalias() = d_proj * kernel.transpose();
            part[layers].noalias() +=
                ConstRowsMap<T>(top + first * top_units, n, top_units).transpose() * d_proj;
          }
          for (int64_t l = layers - 1; l >= 0; --l) {
            const int64_t units = shape.units[l], gates = shape.gates(l), in_width = shape.in[l];
            const int64_t k = shape.k(l), padded = w_t[l].cols();
            // The gradient of this layer's new h: from the state (next step) plus from above.
            auto d_h_total = d_above.topLeftCorner(n, units);
            d_h_total += ConstRowsMap<T>(Data<T>(d_h[l]) + first * units, n, units);
            const T* in = l == 0 ? Data<T>(*x) : Data<T>(new_h[l - 1]);
            const T* h_prev = Data<T>(h[l]);
            T* t_block = t.data();
            GateTanhBlock(in, in_width, h_prev, units, Data<T>(weights[l]), Data<T>(bias[l]), first,
                          n, &u, t_block);
            for (int64_t row = 0; row < n; ++row) {
              const int64_t r = first + row;
              CellGradRow(t_block + row * gates, d_h_total.data() + row * d_above.cols(),
                          Data<T>(d_c[l]) + r * units, Data<T>(c[l]) + r * units, units,
                          d_z.data() + row * gates, Data<T>(d_c_prev_out[l]) + r * units);
            }
            // d_z rows are packed at stride `gates`, d_u rows at stride `padded`.
            T* d_u_data = d_u.data();
            if (!L2L_DISPATCH_PACKETS(T, padded, MatMulRows, d_z.data(), gates, w_t[l].data(), n,
                                      d_u_data)) {
              RowsMap<T>(d_u_data, n, padded).noalias() =
                  ConstRowsMap<T>(d_z.data(), n, gates) * w_t[l];
            }
            const ConstRowsMap<T> d_u_block(d_u_data, n, padded);
            RowsMap<T>(Data<T>(d_h_prev_out[l]) + first * units, n, units) =
                d_u_block.middleCols(in_width, units);
            T* d_w = part[l].data();
            if (!L2L_DISPATCH_PACKETS(T, gates, AccumulateOuterRows, in + first * in_width,
                                      in_width, h_prev + first * units, units, d_z.data(), n, d_w,
                                      d_w + k * gates)) {
              GatherBlock(in, in_width, h_prev, units, first, n, &u);
              const ConstRowsMap<T> block_d_z(d_z.data(), n, gates);
              part[l].topRows(k).noalias() += u.topRows(n).transpose() * block_d_z;
              part[l].row(k) += block_d_z.colwise().sum();
            }
            // Hand the input gradient down: to the layer below, or out as d_x.
            if (l > 0) {
              d_above.topLeftCorner(n, in_width) = d_u_block.leftCols(in_width);
            } else {
              RowsMap<T>(Data<T>(d_x) + first * in_width, n, in_width) =
                  d_u_block.leftCols(in_width);
            }
          }
        }
      });
    for (int64_t shard = 1; shard < num_shards; ++shard) {
      for (size_t i = 0; i < parts[0].size(); ++i) parts[0][i] += parts[shard][i];
    }
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t k = shape.k(l), gates = shape.gates(l);
      Tensor *d_w, *d_b;
      OP_REQUIRES_OK(context, d_weights.allocate(l, weights[l].shape(), &d_w));
      OP_REQUIRES_OK(context, d_bias.allocate(l, TensorShape({gates}), &d_b));
      RowsMap<T>(Data<T>(d_w), k, gates) = parts[0][l].topRows(k);
      RowsMap<T>(Data<T>(d_b), 1, gates) = parts[0][l].row(k);
    }
    RowsMap<T>(Data<T>(d_output_kernel), top_units, outputs) = parts[0][layers];
  }
};

REGISTER_OP("L2lLstmStack")
    .Input("x: T")
    .Input("h: layers * T")
    .Input("c: layers * T")
    .Input("weights: layers * T")
    .Input("bias: layers * T")
    .Input("output_kernel: T")
    .Output("projection: T")
    .Output("new_h: layers * T")
    .Output("new_c: layers * T")
    .Attr("layers: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* context) {
      int64_t layers;
      TF_RETURN_IF_ERROR(context->GetAttr("layers", &layers));
      const auto rows = context->Dim(context->input(0), 0);
      context->set_output(0,
                          context->Matrix(rows, context->Dim(context->input(1 + 4 * layers), 1)));
      for (int64_t l = 0; l < layers; ++l) {
        const auto c = context->input(1 + layers + l);
        context->set_output(1 + l, c);
        context->set_output(1 + layers + l, c);
      }
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("L2lLstmStackGrad")
    .Input("d_projection: T")
    .Input("d_h: layers * T")
    .Input("d_c: layers * T")
    .Input("x: T")
    .Input("h: layers * T")
    .Input("c: layers * T")
    .Input("new_h: layers * T")
    .Input("weights: layers * T")
    .Input("bias: layers * T")
    .Input("output_kernel: T")
    .Output("d_x: T")
    .Output("d_h_prev: layers * T")
    .Output("d_c_prev: layers * T")
    .Output("d_weights: layers * T")
    .Output("d_bias: layers * T")
    .Output("d_output_kernel: T")
    .Attr("layers: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape_inference::InferenceContext* context) {
      int64_t layers;
      TF_RETURN_IF_ERROR(context->GetAttr("layers", &layers));
      const int64_t x = 1 + 2 * layers, h = x + 1, c = h + layers, weights = c + 2 * layers;
      context->set_output(0, context->input(x));
      for (int64_t l = 0; l < layers; ++l) {
        context->set_output(1 + l, context->input(h + l));
        context->set_output(1 + layers + l, context->input(c + l));
        context->set_output(1 + 2 * layers + l, context->input(weights + l));
        context->set_output(1 + 3 * layers + l,
                            context->Vector(context->Dim(context->input(weights + l), 1)));
      }
      context->set_output(1 + 4 * layers, context->input(weights + 2 * layers));
      return ::tensorflow::OkStatus();
    });

#define REGISTER(T)                                                                           \
  REGISTER_KERNEL_BUILDER(Name("L2lLstmStack").Device(DEVICE_CPU).TypeConstraint<T>("T"),     \
                          LstmStackOp<T>);                                                    \
  REGISTER_KERNEL_BUILDER(Name("L2lLstmStackGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          LstmStackGradOp<T>);
REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace
}  // namespace l2l_tf
