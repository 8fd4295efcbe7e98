#include "trainer/tensor_gather.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "nlohmann/json.hpp"

namespace mt {
namespace {

constexpr int kSizesTag = 31001, kHeaderTag = 31002, kPayloadTag = 31003;

}  // namespace

absl::StatusOr<TensorFiles> GatherTensorFiles(Communicator& world, TensorFiles mine) {
  if (world.rank() != 0) {
    nlohmann::json header = nlohmann::json::array();
    int64_t bytes = 0;
    for (const auto& [file, tensors] : mine)
      for (const auto& t : tensors) {
        header.push_back({{"file", file},
                          {"name", t.name},
                          {"dtype", static_cast<int>(t.tensor.dtype())},
                          {"shape", t.tensor.shape()}});
        bytes += static_cast<int64_t>(t.tensor.nbytes());
      }
    const std::string h = header.dump();
    std::vector<uint8_t> payload(bytes);
    int64_t o = 0;
    for (const auto& [file, tensors] : mine)
      for (const auto& t : tensors) {
        std::memcpy(payload.data() + o, t.tensor.raw(), t.tensor.nbytes());
        o += static_cast<int64_t>(t.tensor.nbytes());
      }
    std::vector<int64_t> sizes = {static_cast<int64_t>(h.size()), bytes};
    RETURN_IF_ERROR(world.Send(sizes, 0, kSizesTag));
    RETURN_IF_ERROR(
        world.Send(InBuffer(h.data(), static_cast<int64_t>(h.size()), DType::kU8), 0, kHeaderTag));
    RETURN_IF_ERROR(world.Send(payload, 0, kPayloadTag));
    return TensorFiles();
  }
  TensorFiles all = std::move(mine);
  for (int r = 1; r < world.size(); ++r) {
    std::vector<int64_t> sizes(2);
    RETURN_IF_ERROR(world.Recv(sizes, r, kSizesTag));
    std::string h(sizes[0], '\0');
    RETURN_IF_ERROR(world.Recv(OutBuffer(h.data(), sizes[0], DType::kU8), r, kHeaderTag));
    std::vector<uint8_t> payload(sizes[1]);
    RETURN_IF_ERROR(world.Recv(payload, r, kPayloadTag));
    const nlohmann::json header = nlohmann::json::parse(h, nullptr, /*allow_exceptions=*/false);
    if (!header.is_array())
      return absl::InternalError(absl::StrCat("checkpoint gather: bad metadata from rank ", r));
    int64_t o = 0;
    for (const auto& e : header) {
      Tensor t(e.at("shape").get<std::vector<int64_t>>(),
               static_cast<DType>(e.at("dtype").get<int>()));
      if (o + static_cast<int64_t>(t.nbytes()) > sizes[1])
        return absl::InternalError(
            absl::StrCat("checkpoint gather: rank ", r, " sent fewer bytes than its tensors need"));
      std::memcpy(t.raw(), payload.data() + o, t.nbytes());
      o += static_cast<int64_t>(t.nbytes());
      all[e.at("file").get<std::string>()].push_back({e.at("name").get<std::string>(), t});
    }
  }
  return all;
}

}  // namespace mt
