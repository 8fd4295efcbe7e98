#include "trainer/rank_strings.h"

#include "kernels/status.h"

namespace mt {
namespace {

constexpr int kLengthTag = 31001, kBytesTag = 31002;

}  // namespace

absl::StatusOr<std::string> BroadcastString(Communicator& comm, std::string s, int root) {
  std::vector<int64_t> n = {static_cast<int64_t>(s.size())};
  RETURN_IF_ERROR(comm.Broadcast(n, root));
  s.resize(n[0]);
  if (n[0] > 0) RETURN_IF_ERROR(comm.Broadcast(OutBuffer(s.data(), n[0], DType::kU8), root));
  return s;
}

absl::StatusOr<std::vector<std::string>> GatherStrings(Communicator& comm, const std::string& s) {
  if (comm.rank() != 0) {
    std::vector<int64_t> n = {static_cast<int64_t>(s.size())};
    RETURN_IF_ERROR(comm.Send(n, 0, kLengthTag));
    if (n[0] > 0) RETURN_IF_ERROR(comm.Send(InBuffer(s.data(), n[0], DType::kU8), 0, kBytesTag));
    return std::vector<std::string>();
  }
  std::vector<std::string> all = {s};
  for (int r = 1; r < comm.size(); ++r) {
    std::vector<int64_t> n(1);
    RETURN_IF_ERROR(comm.Recv(n, r, kLengthTag));
    std::string got(n[0], '\0');
    if (n[0] > 0) RETURN_IF_ERROR(comm.Recv(OutBuffer(got.data(), n[0], DType::kU8), r, kBytesTag));
    all.push_back(std::move(got));
  }
  return all;
}

}  // namespace mt
