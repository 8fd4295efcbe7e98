// data/spm_bridge.cc: SentencePiece behind the Abseil-free interface of spm_bridge.h.
#include "data/spm_bridge.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

namespace sentencepiece::logging {
// Exported by libsentencepiece but not declared in its public headers.
int GetMinLogLevel();
void SetMinLogLevel(int v);
}  // namespace sentencepiece::logging

namespace mt::data::spm {
namespace {

class ProcessorModel : public Model {
 public:
  std::vector<int32_t> Encode(std::string_view text) const override {
    std::vector<int> ids;
    processor_.Encode(text, &ids).IgnoreError();  // fails only when no model is loaded
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    processor_.Decode(std::vector<int>(ids.begin(), ids.end()), &text).IgnoreError();
    return text;
  }
  int32_t piece_size() const override { return processor_.GetPieceSize(); }
  int32_t unk_id() const override { return processor_.unk_id(); }
  int32_t bos_id() const override { return processor_.bos_id(); }
  int32_t eos_id() const override { return processor_.eos_id(); }
  int32_t pad_id() const override { return processor_.pad_id(); }
  std::string IdToPiece(int32_t id) const override { return processor_.IdToPiece(id); }

  sentencepiece::SentencePieceProcessor processor_;
};

// Feeds the trainer from a callback.
class CallbackIterator : public sentencepiece::SentenceIterator {
 public:
  explicit CallbackIterator(const std::function<bool(std::string*)>& next) : next_(next) { Next(); }
  bool done() const override { return done_; }
  void Next() override { done_ = !next_(&value_); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::function<bool(std::string*)>& next_;
  std::string value_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Model> LoadFromBytes(const std::string& bytes, std::string* error) {
  auto model = std::make_unique<ProcessorModel>();
  const sentencepiece::util::Status s = model->processor_.LoadFromSerializedProto(bytes);
  if (!s.ok()) {
    *error = s.ToString();
    return nullptr;
  }
  return model;
}

bool Train(const std::unordered_map<std::string, std::string>& options, uint32_t seed,
           const std::function<bool(std::string*)>& next, std::string* model_bytes,
           std::string* error) {
  // SentencePiece logs every step at INFO; keep warnings and errors only.
  const int old_level = sentencepiece::logging::GetMinLogLevel();
  sentencepiece::logging::SetMinLogLevel(1);
  sentencepiece::SetRandomGeneratorSeed(seed);
  CallbackIterator it(next);
  const sentencepiece::util::Status s =
      sentencepiece::SentencePieceTrainer::Train(options, &it, model_bytes);
  sentencepiece::logging::SetMinLogLevel(old_level);
  if (!s.ok()) {
    *error = s.ToString();
    return false;
  }
  return true;
}

}  // namespace mt::data::spm
