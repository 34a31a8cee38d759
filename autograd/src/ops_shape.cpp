// Shape and indexing ops: reshape, permute (head split and merge), embedding lookup, row gather,
// sum and mean. xtensor gives the n-d views for permute and the reductions. Forward and backward
// side by side.
#include <array>
#include <memory>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xreducer.hpp>

#include "edgetune/autograd/kernels.h"
#include "edgetune/autograd/ops.h"
#include "edgetune/autograd/quant.h"
#include "edgetune/autograd/profile.h"
#include "ops_common.h"

namespace edgetune::ops {

using namespace detail;

namespace {
std::vector<std::size_t> xshape(const Shape& s) {
  std::vector<std::size_t> v;
  for (auto d : s.dims()) v.push_back(static_cast<std::size_t>(d));
  return v;
}

template <class T>
auto xview(T* p, const Shape& s) {
  return xt::adapt(p, static_cast<std::size_t>(s.numel()), xt::no_ownership(), xshape(s));
}
}  // namespace

// ---- reshape ------------------------------------------------------------------------------------

namespace {
class ReshapeNode : public Node {
 public:
  const char* name() const override { return "reshape"; }
  // grads: 0 -> dx += dy (the same elements, in the input's shape)
  void backward(const Tensor& dy, GradSink& grads) override {
    Tensor& dx = grads.at(0);
    kernels::add_into(dx, dy.view(dx.shape()));
  }
};
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  profile::Scope profile_scope("reshape");
  require(x.defined(), "reshape: undefined input");
  require(shape.numel() == x.numel(), "reshape: cannot reshape " + describe(x) + " to " +
                                          shape.str() + " (different number of elements)");
  Tensor y = x.view(shape);
  if (is_float(x.dtype()) && should_record({&x})) {
    record(y, std::make_shared<ReshapeNode>(), {&x});
  }
  return y;
}

// ---- permute ------------------------------------------------------------------------------------

namespace {
// dst = permute(src, perm) (+= with accumulate) when the last axis stays last, so whole rows of
// the last dimension move as contiguous blocks (the head split and merge of attention).
template <class T>
void permute_rows(T* dst, const T* src, const Shape& in, const std::vector<std::size_t>& perm,
                  bool accumulate) {
  const int r = in.rank();
  std::array<std::int64_t, Shape::kMaxRank> in_stride{}, out_dim{}, src_stride{};
  std::int64_t st = 1;
  for (int i = r - 1; i >= 0; --i) {
    in_stride[i] = st;
    st *= in[i];
  }
  for (int i = 0; i < r; ++i) {
    out_dim[i] = in[static_cast<int>(perm[i])];
    src_stride[i] = in_stride[perm[i]];
  }
  const std::int64_t inner = in[r - 1];
  const std::int64_t rows = in.numel() / std::max<std::int64_t>(inner, 1);
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(in.numel()))
  for (std::int64_t row = 0; row < rows; ++row) {
    // Output row index -> source offset, digit by digit over the leading output dimensions.
    std::int64_t rem = row, off = 0;
    for (int i = r - 2; i >= 0; --i) {
      off += (rem % out_dim[i]) * src_stride[i];
      rem /= out_dim[i];
    }
    T* d = dst + row * inner;
    const T* s = src + off;
    if (accumulate) {
#pragma omp simd
      for (std::int64_t j = 0; j < inner; ++j) d[j] += s[j];
    } else {
      std::copy(s, s + inner, d);
    }
  }
}

class PermuteNode : public Node {
 public:
  explicit PermuteNode(std::vector<std::size_t> inverse) : inverse_(std::move(inverse)) {}
  const char* name() const override { return "permute"; }
  // grads: 0 -> dx += permute(dy, inverse)
  void backward(const Tensor& dy, GradSink& grads) override {
    Tensor& dx = grads.at(0);
    dispatch_float(dy.dtype(), [&]<class T>() {
      if (inverse_.back() == inverse_.size() - 1) {
        permute_rows(dx.data<T>(), dy.data<T>(), dy.shape(), inverse_, true);
        return;
      }
      auto g = xview(dy.data<T>(), dy.shape());
      auto d = xview(dx.data<T>(), dx.shape());
      d += xt::transpose(g, inverse_);
    });
  }

 private:
  std::vector<std::size_t> inverse_;
};
}  // namespace

Tensor permute(const Tensor& x, std::span<const int> perm) {
  profile::Scope profile_scope("permute");
  require_float("permute", x);
  require(static_cast<int>(perm.size()) == x.rank(),
          "permute: " + std::to_string(perm.size()) + " axes given for " + describe(x));
  std::vector<std::size_t> p(perm.size()), inverse(perm.size());
  std::vector<bool> used(perm.size(), false);
  std::vector<std::int64_t> dims(perm.size());
  for (std::size_t i = 0; i < perm.size(); ++i) {
    require(perm[i] >= 0 && perm[i] < x.rank() && !used[perm[i]],
            "permute: the axes must be a permutation of 0.." + std::to_string(x.rank() - 1));
    used[perm[i]] = true;
    p[i] = static_cast<std::size_t>(perm[i]);
    inverse[p[i]] = i;
    dims[i] = x.dim(perm[i]);
  }
  Tensor y = new_output(Shape(dims), x.dtype());
  dispatch_float(x.dtype(), [&]<class T>() {
    if (p.back() == p.size() - 1) {
      permute_rows(y.data<T>(), x.data<T>(), x.shape(), p, false);
      return;
    }
    auto in = xview(x.data<T>(), x.shape());
    auto out = xview(y.data<T>(), y.shape());
    out = xt::transpose(in, p);
  });
  if (should_record({&x})) record(y, std::make_shared<PermuteNode>(std::move(inverse)), {&x});
  return y;
}

// ---- embedding and gather_rows (row lookups, scatter-add backward) ------------------------------

namespace {
// dtable[ids[i]] += dy[i] for every i with ids[i] != skip; serial over i so repeated ids add in
// a fixed order.
template <class T>
void scatter_add_rows(T* dtable, const T* dy, const std::int32_t* ids, std::int64_t n,
                      std::int64_t c, std::int32_t skip) {
  for (std::int64_t i = 0; i < n; ++i) {
    if (ids[i] == skip) continue;
    T* d = dtable + static_cast<std::int64_t>(ids[i]) * c;
    const T* g = dy + i * c;
#pragma omp simd
    for (std::int64_t j = 0; j < c; ++j) d[j] += g[j];
  }
}

class RowLookupNode : public Node {
 public:
  RowLookupNode(const char* name, Tensor ids, std::int64_t c, std::int32_t skip)
      : name_(name), ids_(std::move(ids)), c_(c), skip_(skip) {}
  const char* name() const override { return name_; }
  // grads: 0 -> dtable[ids[i]] += dy[i], except for the padding id
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      scatter_add_rows(grads.at(0).data<T>(), dy.data<T>(), ids_.data<std::int32_t>(),
                       ids_.numel(), c_, skip_);
    });
  }
  void release() override { ids_ = Tensor(); }

 private:
  const char* name_;
  Tensor ids_;  // I32, any shape
  std::int64_t c_;
  std::int32_t skip_;  // padding id, or -1
};

void check_ids(const char* op, const Tensor& ids, std::int64_t rows, const Tensor& table) {
  require(ids.defined() && ids.dtype() == DType::I32,
          std::string(op) + ": ids must be an I32 tensor");
  const std::int32_t* p = ids.data<std::int32_t>();
  for (std::int64_t i = 0; i < ids.numel(); ++i) {
    require(p[i] >= 0 && p[i] < rows, std::string(op) + ": id " + std::to_string(p[i]) +
                                          " at position " + std::to_string(i) +
                                          " is out of range for " + describe(table) +
                                          " (expected 0.." + std::to_string(rows - 1) + ")");
  }
}
}  // namespace

Tensor embedding(const Tensor& table, const Tensor& ids, std::int32_t padding_idx) {
  profile::Scope profile_scope("embedding");
  require(table.defined() && table.rank() == 2, "embedding: table must be a (V, C) matrix");
  const std::int64_t v = table.dim(0), c = table.dim(1);
  check_ids("embedding", ids, v, table);
  Shape out_shape = ids.shape();
  require(out_shape.rank() < Shape::kMaxRank, "embedding: ids have too many dimensions");
  std::vector<std::int64_t> dims(out_shape.dims().begin(), out_shape.dims().end());
  dims.push_back(c);
  const DType out_dtype = is_quantized(table.dtype()) ? DType::F32 : table.dtype();
  require(is_float(out_dtype), "embedding: table must be float or quantized");
  Tensor y = new_output(Shape(dims), out_dtype);
  const std::int32_t* id = ids.data<std::int32_t>();
  const std::int64_t n = ids.numel();
  dispatch_float(out_dtype, [&]<class T>() {
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads()) if (worth_threads(n * c))
    for (std::int64_t i = 0; i < n; ++i) {
      if (is_quantized(table.dtype())) {
        dequantize_rows(table, id[i], 1, py + i * c);
      } else {
        const T* row = table.data<T>() + static_cast<std::int64_t>(id[i]) * c;
        std::copy(row, row + c, py + i * c);
      }
    }
  });
  if (should_record({&table})) {
    record(y, std::make_shared<RowLookupNode>("embedding", ids.detach(), c, padding_idx),
           {&table});
  }
  return y;
}

Tensor gather_rows(const Tensor& x, const Tensor& idx) {
  profile::Scope profile_scope("gather_rows");
  require_float("gather_rows", x);
  require(x.rank() == 2, "gather_rows: x must be (N, C), got " + describe(x));
  require(idx.defined() && idx.rank() == 1, "gather_rows: idx must be I32 (M)");
  check_ids("gather_rows", idx, x.dim(0), x);
  const std::int64_t m = idx.numel(), c = x.dim(1);
  Tensor y = new_output(Shape{m, c}, x.dtype());
  const std::int32_t* id = idx.data<std::int32_t>();
  dispatch_float(x.dtype(), [&]<class T>() {
    for (std::int64_t i = 0; i < m; ++i) {
      const T* row = x.data<T>() + static_cast<std::int64_t>(id[i]) * c;
      std::copy(row, row + c, y.data<T>() + i * c);
    }
  });
  if (should_record({&x})) {
    record(y, std::make_shared<RowLookupNode>("gather_rows", idx.detach(), c, -1), {&x});
  }
  return y;
}

// ---- sum and mean ---------------------------------------------------------------------------------

namespace {
class SumNode : public Node {
 public:
  SumNode(const char* name, double factor) : name_(name), factor_(factor) {}
  const char* name() const override { return name_; }
  // grads: 0 -> dx += dy * factor (1 for sum, 1/n for mean)
  void backward(const Tensor& dy, GradSink& grads) override {
    dispatch_float(dy.dtype(), [&]<class T>() {
      auto dx = xview(grads.at(0).data<T>(), grads.at(0).shape());
      dx += dy.data<T>()[0] * static_cast<T>(factor_);
    });
  }

 private:
  const char* name_;
  double factor_;
};

Tensor reduce_all(const char* name, const Tensor& x, bool mean) {
  profile::Scope profile_scope(name);
  require_float(name, x);
  Tensor y = new_output(Shape{}, x.dtype());
  const double n = static_cast<double>(x.numel());
  dispatch_float(x.dtype(), [&]<class T>() {
    T total = xt::sum(xview(x.data<T>(), x.shape()))();
    y.data<T>()[0] = mean ? total / static_cast<T>(n) : total;
  });
  if (should_record({&x})) {
    record(y, std::make_shared<SumNode>(name, mean ? 1.0 / n : 1.0), {&x});
  }
  return y;
}
}  // namespace

Tensor sum(const Tensor& x) { return reduce_all("sum", x, false); }
Tensor mean(const Tensor& x) { return reduce_all("mean", x, true); }

}  // namespace edgetune::ops
