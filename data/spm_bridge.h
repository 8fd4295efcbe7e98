// data/spm_bridge.h: the only door to SentencePiece, with no Abseil on either side.
//
// Debian 12's sentencepiece_processor.h declares `namespace absl { using std::string_view; }`
// while Debian's Abseil defines its own absl::string_view class, so the two headers cannot
// meet in one translation unit. spm_bridge.cc includes SentencePiece only; everything else
// talks to it through these plain-C++ declarations (errors come back as strings).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mt::data::spm {

// An opaque loaded SentencePiece model.
class Model {
 public:
  virtual ~Model() = default;
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t piece_size() const = 0;
  virtual int32_t unk_id() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual std::string IdToPiece(int32_t id) const = 0;
};

// Loads a serialized ModelProto (the bytes of a .model file). On failure returns null and
// sets *error.
std::unique_ptr<Model> LoadFromBytes(const std::string& bytes, std::string* error);

// Trains on the sentences `next` yields (it returns false when done) with the trainer flags
// in `options` (spm_train's names); `seed` fixes its sentence sampling. On success returns
// true and the serialized model.
bool Train(const std::unordered_map<std::string, std::string>& options, uint32_t seed,
           const std::function<bool(std::string*)>& next, std::string* model_bytes,
           std::string* error);

}  // namespace mt::data::spm
