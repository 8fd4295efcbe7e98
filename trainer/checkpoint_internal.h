// trainer/checkpoint_internal.h: the pieces of the step-directory protocol that
// checkpoint.cc (one writer) and checkpoint_shards.cc (several writers) share. Not for use
// outside those two files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mt::checkpoint_internal {

inline constexpr char kManifest[] = "manifest.json";
inline constexpr char kTmpPrefix[] = ".tmp-";
inline constexpr char kFormat[] = "moetrain-checkpoint";
inline constexpr int kVersion = 1;

// MOETRAIN_CKPT_CRASH: where a save SIGKILLs itself (the crash tests).
enum class Phase { kNone, kMidShard, kBeforeRename, kAfterRename };
absl::StatusOr<Phase> CrashPhaseFromEnv();
void CrashIf(Phase configured, Phase here);

absl::Status CheckStateFileName(const std::string& name);
absl::Status CheckExtraFileName(const std::string& name);
absl::StatusOr<std::string> DumpJson(const nlohmann::json& j, const std::string& what);
void WarnRemoveAll(const std::filesystem::path& p);

// Runs `write`, which fills `tmp` and returns its manifest, then seals and commits `tmp` as
// step `step` of `root`: manifest, fsyncs, the rename (the commit), `latest`, pruning. A
// failure before the rename deletes `tmp`; the root keeps its previous steps.
absl::Status CommitStep(const std::filesystem::path& root, const std::filesystem::path& tmp,
                        int64_t step, int64_t keep_last, Phase crash,
                        const std::function<absl::StatusOr<nlohmann::json>()>& write);

}  // namespace mt::checkpoint_internal
