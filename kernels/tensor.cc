#include "kernels/tensor.h"

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/bf16.h"

namespace mt {

void CheckFailed(const char* cond, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "[moetrain] internal check failed at %s:%d: %s %s\n", file, line, cond,
               msg.c_str());
  std::fflush(stderr);
  std::abort();
}

namespace {

// Training allocates and frees the same activation sizes every micro-batch. glibc serves
// large blocks with mmap and returns them to the kernel on free, so each step paid page
// faults and zeroing for every activation; keeping freed memory in the heap turns the
// allocator into a cache (no allocation reaches the kernel after the first step).
[[maybe_unused]] const bool kKeepFreedMemory = [] {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, -1);  // never give freed memory back to the kernel
  return true;
}();

struct DTypeInfo {
  DType dtype;
  size_t size;
  const char* name;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, 4, "F32"},     {DType::kF64, 8, "F64"},         {DType::kBF16, 2, "BF16"},
    {DType::kF16, 2, "F16"},     {DType::kF8E4M3, 1, "F8_E4M3"},  {DType::kF8E5M2, 1, "F8_E5M2"},
    {DType::kI8, 1, "I8"},       {DType::kU8, 1, "U8"},           {DType::kI16, 2, "I16"},
    {DType::kU16, 2, "U16"},     {DType::kI32, 4, "I32"},         {DType::kI64, 8, "I64"},
};
const DTypeInfo& Info(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i;
  std::abort();
}
}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
const char* DTypeName(DType dtype) { return Info(dtype).name; }
absl::StatusOr<DType> DTypeFromName(const std::string& name) {
  for (const auto& i : kDTypes)
    if (i.name == name) return i.dtype;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name, "\""));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MT_CHECK(d >= 0, "negative dimension in ", ShapeString(shape));
    n *= d;
  }
  return n;
}

Tensor::Tensor(std::vector<int64_t> shape, DType dtype)
    : dtype_(dtype), shape_(std::move(shape)), numel_(NumElements(shape_)) {
  // 64-byte alignment: AVX-512 loads and cache lines; at least 64 bytes so empty tensors
  // still own a distinct buffer.
  size_t bytes = (std::max<size_t>(nbytes(), 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  MT_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes");
  std::memset(p, 0, bytes);
  buffer_ = std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* b) { std::free(b); });
}

Tensor::Tensor(std::vector<int64_t> shape, DType dtype, Device device,
               std::shared_ptr<std::byte> buffer)
    : buffer_(std::move(buffer)),
      dtype_(dtype),
      device_(device),
      shape_(std::move(shape)),
      numel_(NumElements(shape_)) {
  MT_CHECK(buffer_ != nullptr, "Tensor over a null buffer");
}

void Tensor::CheckType(DType want) const {
  MT_CHECK(defined(), "use of an undefined tensor");
  MT_CHECK(dtype_ == want, "tensor dtype is ", DTypeName(dtype_), ", accessed as ", DTypeName(want));
}

Tensor Tensor::View(std::vector<int64_t> shape) const {
  MT_CHECK(NumElements(shape) == numel_, "view ", ShapeString(shape), " of ", ShapeString(shape_));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  MT_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "slice [", begin, ", ",
           end, ") of ", ShapeString(shape_));
  Tensor t = *this;
  const int64_t row = shape_[0] > 0 ? numel_ / shape_[0] : 0;
  t.offset_ += static_cast<size_t>(begin * row) * DTypeSize(dtype_);
  t.shape_[0] = end - begin;
  t.numel_ = (end - begin) * row;
  return t;
}

Tensor Tensor::Clone() const {
  MT_CHECK(device_ == Device::kCPU, "Clone of a device tensor (use its backend)");
  Tensor t(shape_, dtype_);
  if (numel_ > 0) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

void Tensor::Zero() {
  MT_CHECK(device_ == Device::kCPU, "Zero of a device tensor (use its backend)");
  if (numel_ > 0) std::memset(raw(), 0, nbytes());
}

Tensor Tensor::To(DType dtype) const {
  MT_CHECK(device_ == Device::kCPU, "To() of a device tensor (use its backend)");
  if (dtype == dtype_) return Clone();
  Tensor out(shape_, dtype);
  auto load = [&](int64_t i) -> double {
    switch (dtype_) {
      case DType::kF32: return static_cast<const float*>(raw())[i];
      case DType::kF64: return static_cast<const double*>(raw())[i];
      case DType::kBF16: return Bf16ToFloat(static_cast<const uint16_t*>(raw())[i]);
      default: MT_CHECK(false, "Tensor::To from ", DTypeName(dtype_)); return 0;
    }
  };
  for (int64_t i = 0; i < numel_; ++i) {
    double v = load(i);
    switch (dtype) {
      case DType::kF32: static_cast<float*>(out.raw())[i] = static_cast<float>(v); break;
      case DType::kF64: static_cast<double*>(out.raw())[i] = v; break;
      case DType::kBF16:
        static_cast<uint16_t*>(out.raw())[i] = FloatToBf16(static_cast<float>(v));
        break;
      default: MT_CHECK(false, "Tensor::To to ", DTypeName(dtype));
    }
  }
  return out;
}

}  // namespace mt
