// kernels/tensor.h: the n-dimensional array every layer passes around.
//
// A Tensor is a dtype tag, a shape and a reference-counted, 64-byte-aligned buffer on
// one device. Copies share the buffer (like torch.Tensor); Clone() copies the bytes.
// A device tensor's memory comes from its backend (kernels/backend.h): raw() is then a
// device pointer, and only the backend's ops touch the bytes.
// It knows nothing of models or ranks. Row-major ("C order") always, because that is
// what safetensors, Megatron's .bin files and cuBLASLt's row-major layouts use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/status.h"

namespace mt {

enum class DType : uint8_t { kF32, kF64, kBF16, kF16, kF8E4M3, kF8E5M2, kI8, kU8, kI16, kU16, kI32, kI64 };
enum class Device : uint8_t { kCPU, kCUDA };

size_t DTypeSize(DType dtype);
// The safetensors spelling: "F32", "BF16", "F8_E4M3", ... (a C string: Debian's Abseil has
// its own string_view, so std::string_view does not mix with absl::StrCat).
const char* DTypeName(DType dtype);
absl::StatusOr<DType> DTypeFromName(const std::string& name);

template <typename T> constexpr DType DTypeOf();
template <> constexpr DType DTypeOf<float>() { return DType::kF32; }
template <> constexpr DType DTypeOf<double>() { return DType::kF64; }
template <> constexpr DType DTypeOf<int32_t>() { return DType::kI32; }
template <> constexpr DType DTypeOf<int64_t>() { return DType::kI64; }
template <> constexpr DType DTypeOf<uint16_t>() { return DType::kU16; }
template <> constexpr DType DTypeOf<uint8_t>() { return DType::kU8; }

std::string ShapeString(const std::vector<int64_t>& shape);
int64_t NumElements(const std::vector<int64_t>& shape);

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled CPU tensor.
  explicit Tensor(std::vector<int64_t> shape, DType dtype = DType::kF32);
  // A tensor over `buffer` (at least nbytes(), freed by its deleter) on `device`.
  Tensor(std::vector<int64_t> shape, DType dtype, Device device, std::shared_ptr<std::byte> buffer);

  bool defined() const { return buffer_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * DTypeSize(dtype_); }

  void* raw() { return buffer_.get() + offset_; }
  const void* raw() const { return buffer_.get() + offset_; }
  template <typename T> T* data() {
    CheckType(DTypeOf<T>());
    return reinterpret_cast<T*>(raw());
  }
  template <typename T> const T* data() const {
    CheckType(DTypeOf<T>());
    return reinterpret_cast<const T*>(raw());
  }

  // Same buffer, new shape with the same element count.
  Tensor View(std::vector<int64_t> shape) const;
  // Rows [begin, end) of dimension 0, sharing the buffer.
  Tensor Slice(int64_t begin, int64_t end) const;
  // Clone, Zero and To are for CPU tensors (a backend copies and zeroes device ones).
  Tensor Clone() const;
  void Zero();
  // Element-type conversion between floating types (f32 <-> f64 <-> bf16 via f32).
  Tensor To(DType dtype) const;

 private:
  void CheckType(DType want) const;

  std::shared_ptr<std::byte> buffer_;
  size_t offset_ = 0;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
};

}  // namespace mt
