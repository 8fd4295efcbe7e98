// trainer/checkpoint.cc: the step-directory commit protocol, manifest and resume choice.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/status.h"
#include "trainer/checkpoint_internal.h"
#include "trainer/durable_file.h"
#include "trainer/hf_import.h"

namespace mt {
namespace checkpoint_internal {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr uint64_t kMaxManifestBytes = uint64_t{64} << 20;
constexpr uint64_t kMaxTrainStateBytes = uint64_t{1} << 30;
const char* const kRequiredFiles[] = {"config.json", "train_state.json",
                                      "model.safetensors.index.json"};

absl::StatusOr<Phase> CrashPhaseFromEnv() {
  const char* v = std::getenv("MOETRAIN_CKPT_CRASH");
  if (v == nullptr || *v == '\0') return Phase::kNone;
  std::string s(v);
  if (s == "mid-shard") return Phase::kMidShard;
  if (s == "before-rename") return Phase::kBeforeRename;
  if (s == "after-rename") return Phase::kAfterRename;
  return absl::InvalidArgumentError(absl::StrCat(
      "MOETRAIN_CKPT_CRASH=\"", s, "\": expected mid-shard, before-rename or after-rename"));
}

// Fault injection: die the way a node loss does, with no chance to clean up.
void CrashIf(Phase configured, Phase here) {
  if (configured == here) ::raise(SIGKILL);
}

// "step-0001234" -> 1234; -1 for anything else.
int64_t ParseStepDirName(const std::string& name) {
  if (name.size() != 12 || name.rfind("step-", 0) != 0) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// A name that can only denote a file directly inside the step directory.
bool IsPlainFileName(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

absl::Status CheckStateFileName(const std::string& name) {
  if (!IsPlainFileName(name) || name == "model" || name.rfind("model-", 0) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint state file name \"", name,
        "\" must be letters, digits, '-', '_', '.' (not starting with '.') and not \"model\""));
  }
  return absl::OkStatus();
}

absl::Status CheckExtraFileName(const std::string& name) {
  auto ends_with = [&name](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (!IsPlainFileName(name) || ends_with(".safetensors") || ends_with(".json")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint extra file name \"", name,
        "\" must be letters, digits, '-', '_', '.' (not starting with '.') and not end in "
        ".safetensors or .json"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DumpJson(const Json& j, const std::string& what) {
  try {
    return j.dump(2) + "\n";
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot serialise ", what, ": ", e.what()));
  }
}

absl::Status RenameOrError(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", from.string(), " to ", to.string(),
                                            ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void WarnRemoveAll(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) {
    std::fprintf(stderr, "[moetrain] checkpoint: could not delete %s: %s\n", p.c_str(),
                 ec.message().c_str());
  }
}

// Writes every file of the step into `dir`; returns the manifest.
absl::StatusOr<Json> WriteStepFiles(const fs::path& dir, int64_t step, const CheckpointData& data,
                                    const SaveOptions& opts, Phase crash) {
  Json files = Json::object();
  auto record = [&files](const std::string& name, const FileDigest& d) {
    files[name] = {{"size", d.size}, {"sha256", d.sha256}};
  };
  ASSIGN_OR_RETURN(std::string config, DumpJson(data.config_json, "config.json"));
  ASSIGN_OR_RETURN(FileDigest d, WriteFileDurably((dir / "config.json").string(), config));
  record("config.json", d);

  auto mid_shard = [crash](size_t tensors_written) {
    if (tensors_written == 1) CrashIf(crash, Phase::kMidShard);
  };
  ASSIGN_OR_RETURN(std::vector<WrittenFile> model_files,
                   WriteHfModelFiles(dir.string(), data.model, opts.model_dtype,
                                     opts.max_shard_bytes, mid_shard));
  for (const WrittenFile& f : model_files) record(f.name, f.digest);

  Json state_orders = Json::object();
  for (const auto& [name, tensors] : data.state_files) {
    const std::string file = name + ".safetensors";
    ASSIGN_OR_RETURN(
        d, WriteSafetensorsWithDigest((dir / file).string(), tensors, {{"format", "pt"}}));
    record(file, d);
    Json order = Json::array();
    for (const NamedTensor& t : tensors) order.push_back(t.name);
    state_orders[name] = std::move(order);
  }
  Json extra = Json::array();
  for (const auto& [name, source] : data.extra_files) {
    ASSIGN_OR_RETURN(d, CopyFileDurably(source, (dir / name).string()));
    record(name, d);
    extra.push_back(name);
  }
  ASSIGN_OR_RETURN(std::string train_state, DumpJson(data.train_state, "train_state.json"));
  ASSIGN_OR_RETURN(d, WriteFileDurably((dir / "train_state.json").string(), train_state));
  record("train_state.json", d);

  Json model_order = Json::array();
  for (const NamedTensor& t : data.model) model_order.push_back(t.name);
  return Json{{"format", kFormat},
              {"version", kVersion},
              {"step", step},
              {"model_dtype", DTypeName(opts.model_dtype)},
              {"model_tensors", std::move(model_order)},
              {"state_files", std::move(state_orders)},
              {"extra_files", std::move(extra)},
              {"files", std::move(files)}};
}

// Moves `tmp` to `final_dir`, replacing an existing step of the same number.
absl::Status CommitRename(const fs::path& root, const fs::path& tmp, const fs::path& final_dir,
                          const std::string& name) {
  if (!fs::exists(final_dir)) return RenameOrError(tmp, final_dir);
  // Swap atomically where the filesystem can; the old contents end up under `tmp`, a
  // dead-writer name that a later save cleans if we die before deleting it.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    RETURN_IF_ERROR(FsyncDir(root.string()));
    WarnRemoveAll(tmp);
    return absl::OkStatus();
  }
  const fs::path aside = root / absl::StrCat(kTmpPrefix, "old-", name, "-", ::getpid());
  RETURN_IF_ERROR(RenameOrError(final_dir, aside));
  RETURN_IF_ERROR(RenameOrError(tmp, final_dir));
  RETURN_IF_ERROR(FsyncDir(root.string()));
  WarnRemoveAll(aside);
  return absl::OkStatus();
}

// After a commit: drop committed steps beyond keep_last (never `current`), and temporary
// directories whose writer process is gone. Failures here only warn: the commit stands.
void Prune(const fs::path& root, int64_t current, int64_t keep_last) {
  std::vector<int64_t> steps;
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    int64_t step = ParseStepDirName(name);
    if (step >= 0 && e.is_directory(ec) && !e.is_symlink(ec)) steps.push_back(step);
    if (name.rfind(kTmpPrefix, 0) != 0) continue;
    const size_t dash = name.rfind('-');
    const long pid = std::strtol(name.c_str() + dash + 1, nullptr, 10);
    const bool dead = pid == ::getpid() || (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH);
    if (dead) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) WarnRemoveAll(p);
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = 0; i < steps.size(); ++i) {
    if (static_cast<int64_t>(i) < keep_last || steps[i] == current) continue;
    // Rename first so a crash mid-delete leaves a dead-writer directory, not a step with
    // holes that would need a manifest check to rule out.
    const fs::path doomed =
        root / absl::StrCat(kTmpPrefix, "prune-", StepDirName(steps[i]), "-", ::getpid());
    if (RenameOrError(root / StepDirName(steps[i]), doomed).ok()) WarnRemoveAll(doomed);
  }
}

absl::Status UpdateLatest(const fs::path& root, const std::string& name) {
  RETURN_IF_ERROR(WriteFileDurably((root / "latest.tmp").string(), name + "\n").status());
  RETURN_IF_ERROR(RenameOrError(root / "latest.tmp", root / "latest"));
  return FsyncDir(root.string());
}

// manifest.json, every field type-checked (it is read back from disk, so it is input).
struct Manifest {
  int64_t step = -1;
  std::vector<std::string> model_tensors;                       // save order
  std::map<std::string, std::vector<std::string>> state_files;  // name -> tensor order
  // name -> its files, for a checkpoint written by several processes (absent: the one file
  // <name>.safetensors)
  std::map<std::string, std::vector<std::string>> state_file_shards;
  std::vector<std::string> extra_files;     // copied side files
  std::map<std::string, FileDigest> files;  // every other file
};

bool StringList(const Json& j, std::vector<std::string>* out) {
  if (!j.is_array()) return false;
  for (const Json& s : j) {
    if (!s.is_string()) return false;
    out->push_back(s.get<std::string>());
  }
  return true;
}

absl::StatusOr<Manifest> ReadManifest(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / kManifest, ec)) return absl::NotFoundError("manifest missing");
  ASSIGN_OR_RETURN(Json j, ReadJsonObject((dir / kManifest).string(), kMaxManifestBytes));
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("manifest.json: ", what));
  };
  auto field = [&j](const char* key) { return j.contains(key) ? j[key] : Json(); };
  if (field("format") != kFormat || field("version") != kVersion) {
    return bad(absl::StrCat("not a ", kFormat, " version ", kVersion, " manifest"));
  }
  Manifest m;
  if (!field("step").is_number_integer()) return bad("\"step\" is not an integer");
  m.step = field("step").get<int64_t>();
  if (!StringList(field("model_tensors"), &m.model_tensors)) {
    return bad("\"model_tensors\" is not a list of names");
  }
  const Json state = field("state_files");
  if (!state.is_object()) return bad("\"state_files\" is not an object");
  for (const auto& [name, order] : state.items()) {
    RETURN_IF_ERROR(CheckStateFileName(name));
    if (!StringList(order, &m.state_files[name])) {
      return bad(absl::StrCat("state_files[\"", name, "\"] is not a list of names"));
    }
  }
  if (j.contains("state_file_shards")) {
    const Json shards = j["state_file_shards"];
    if (!shards.is_object()) return bad("\"state_file_shards\" is not an object");
    for (const auto& [name, files] : shards.items()) {
      if (!m.state_files.count(name) || !StringList(files, &m.state_file_shards[name]))
        return bad(absl::StrCat("state_file_shards[\"", name, "\"] is malformed"));
      for (const std::string& f : m.state_file_shards[name])
        if (!IsPlainFileName(f)) return bad(absl::StrCat("state file shard \"", f, "\""));
    }
  }
  // Absent in manifests written before extra files existed.
  if (j.contains("extra_files") && !StringList(j["extra_files"], &m.extra_files)) {
    return bad("\"extra_files\" is not a list of names");
  }
  const Json files = field("files");
  if (!files.is_object()) return bad("\"files\" is not an object");
  for (const auto& [name, entry] : files.items()) {
    if (!IsPlainFileName(name) || name == kManifest || !entry.is_object() ||
        !entry.contains("size") || !entry["size"].is_number_unsigned() ||
        !entry.contains("sha256") || !entry["sha256"].is_string()) {
      return bad(absl::StrCat("entry \"", name, "\" is malformed"));
    }
    m.files[name] = {entry["size"].get<uint64_t>(), entry["sha256"].get<std::string>()};
  }
  for (const std::string& name : m.extra_files) {
    RETURN_IF_ERROR(CheckExtraFileName(name));
    if (!m.files.count(name)) {
      return bad(absl::StrCat("extra file \"", name, "\" is not in \"files\""));
    }
  }
  return m;
}

// Runs `write`, which fills `tmp` and returns its manifest, then seals and commits `tmp` as
// step `step` of `root`: manifest, fsyncs, the rename (the commit), `latest`, pruning. A
// failure before the rename deletes `tmp`; the root keeps its previous steps.
absl::Status CommitStep(const fs::path& root, const fs::path& tmp, int64_t step, int64_t keep_last,
                        Phase crash, const std::function<absl::StatusOr<Json>()>& write) {
  const std::string name = StepDirName(step);
  auto seal = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Json manifest, write());
    RETURN_IF_ERROR(WriteFileDurably((tmp / kManifest).string(), manifest.dump(2) + "\n").status());
    return FsyncDir(tmp.string());
  };
  if (absl::Status s = seal(); !s.ok()) {
    WarnRemoveAll(tmp);
    return Annotate(s, absl::StrCat("saving checkpoint ", name, " under ", root.string()));
  }
  CrashIf(crash, Phase::kBeforeRename);
  RETURN_IF_ERROR(CommitRename(root, tmp, root / name, name));
  RETURN_IF_ERROR(FsyncDir(root.string()));
  CrashIf(crash, Phase::kAfterRename);
  RETURN_IF_ERROR(UpdateLatest(root, name));
  Prune(root, step, keep_last);
  return absl::OkStatus();
}

}  // namespace checkpoint_internal

using namespace checkpoint_internal;  // NOLINT: this file's own internals

absl::StatusOr<FileDigest> CopyFileDurably(const std::string& from, const std::string& to) {
  const int fd = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", from, ": ", std::strerror(errno)));
  }
  auto close_fd = absl::MakeCleanup([fd] { ::close(fd); });
  ASSIGN_OR_RETURN(DurableFileWriter out, DurableFileWriter::Create(to));
  std::vector<char> buf(size_t{1} << 20);
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::InternalError(absl::StrCat("reading ", from, ": ", std::strerror(errno)));
    }
    if (n == 0) break;
    RETURN_IF_ERROR(out.Append(buf.data(), static_cast<size_t>(n)));
  }
  return out.Close();
}

std::string StepDirName(int64_t step) { return absl::StrFormat("step-%07d", step); }

absl::Status SaveCheckpoint(const std::string& root_dir, int64_t step, const CheckpointData& data,
                            const SaveOptions& opts) {
  if (step < 0 || step > 9'999'999) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step ", step, " outside [0, 9999999]"));
  }
  if (opts.keep_last < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint keep_last must be >= 1, got ", opts.keep_last));
  }
  if (!data.config_json.is_object() || !data.train_state.is_object()) {
    return absl::InvalidArgumentError(
        "checkpoint config_json and train_state must be JSON objects");
  }
  for (const auto& [name, tensors] : data.state_files) RETURN_IF_ERROR(CheckStateFileName(name));
  for (const auto& [name, source] : data.extra_files) RETURN_IF_ERROR(CheckExtraFileName(name));
  ASSIGN_OR_RETURN(Phase crash, CrashPhaseFromEnv());

  ASSIGN_OR_RETURN(const std::string tmp, BeginCheckpoint(root_dir, step));
  return CommitStep(root_dir, tmp, step, opts.keep_last, crash,
                    [&] { return WriteStepFiles(tmp, step, data, opts, crash); });
}

absl::Status VerifyCheckpoint(const std::string& step_dir) {
  const fs::path dir(step_dir);
  ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  const int64_t dir_step = ParseStepDirName(dir.filename().string());
  if (dir_step >= 0 && m.step != dir_step) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest says step ", m.step, ", the directory name says ", dir_step));
  }
  for (const char* required : kRequiredFiles) {
    if (!m.files.count(required)) {
      return absl::InvalidArgumentError(absl::StrCat("manifest does not list ", required));
    }
  }
  // Cheap checks on every file before hashing any.
  for (const auto& [name, want] : m.files) {
    struct stat st;
    if (::lstat((dir / name).c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(name, " missing"));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is not a regular file"));
    }
    if (static_cast<uint64_t>(st.st_size) != want.size) {
      return absl::DataLossError(
          absl::StrCat(name, " is ", st.st_size, " bytes, manifest says ", want.size));
    }
  }
  for (const auto& [name, want] : m.files) {
    ASSIGN_OR_RETURN(FileDigest d, DigestFile((dir / name).string()));
    if (d.sha256 != want.sha256) {
      return absl::DataLossError(absl::StrCat(name, " SHA-256 mismatch (contents corrupted)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointData> LoadCheckpoint(const std::string& step_dir, bool verify) {
  return LoadCheckpoint(step_dir, verify, [](const std::string&) { return true; });
}

absl::StatusOr<CheckpointData> LoadCheckpoint(
    const std::string& step_dir, bool verify,
    const std::function<bool(const std::string&)>& wanted) {
  const fs::path dir(step_dir);
  if (verify) RETURN_IF_ERROR(Annotate(VerifyCheckpoint(step_dir), step_dir));
  ASSIGN_OR_RETURN(Manifest m, ReadManifest(dir));
  std::vector<std::string> model_names;  // the wanted model tensors, in save order
  for (const std::string& n : m.model_tensors)
    if (wanted(n)) model_names.push_back(n);
  const std::set<std::string> listed(m.model_tensors.begin(), m.model_tensors.end());
  ASSIGN_OR_RETURN(
      HfModelDir hf,
      LoadHfModelDir(
          step_dir, [&listed](const std::string& name) { return listed.count(name) > 0; }, wanted));
  if (hf.tensors.size() != model_names.size()) {
    return absl::DataLossError(absl::StrCat(step_dir, ": the manifest lists ", model_names.size(),
                                            " wanted model tensors, the shards hold ",
                                            hf.tensors.size()));
  }
  CheckpointData out;
  out.config_json = std::move(hf.config);
  std::map<std::string, Tensor> by_name;
  for (NamedTensor& t : hf.tensors) by_name.emplace(t.name, std::move(t.tensor));
  for (const std::string& name : model_names) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::DataLossError(absl::StrCat(step_dir, ": no model tensor \"", name, "\""));
    }
    out.model.push_back({name, it->second});
  }
  for (const auto& [name, order] : m.state_files) {
    auto sh = m.state_file_shards.find(name);
    const std::vector<std::string> files = sh != m.state_file_shards.end()
                                               ? sh->second
                                               : std::vector<std::string>{name + ".safetensors"};
    std::map<std::string, Tensor> held;
    size_t listed = 0;
    for (const std::string& file : files) {
      ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open((dir / file).string()));
      listed += f.names().size();
      for (const std::string& n : f.names()) {
        if (!wanted(n)) continue;
        ASSIGN_OR_RETURN(Tensor t, f.Read(n));
        held.emplace(n, std::move(t));
      }
    }
    if (listed != order.size()) {
      return absl::DataLossError(absl::StrCat(step_dir, ": state file ", name,
                                              " does not hold the tensors the manifest lists"));
    }
    std::vector<NamedTensor>& tensors = out.state_files[name];
    for (const std::string& n : order) {
      if (!wanted(n)) continue;
      auto it = held.find(n);
      if (it == held.end())
        return absl::DataLossError(
            absl::StrCat(step_dir, ": state file ", name, " has no \"", n, "\""));
      tensors.push_back({n, std::move(it->second)});
    }
  }
  for (const std::string& name : m.extra_files) out.extra_files[name] = (dir / name).string();
  ASSIGN_OR_RETURN(out.train_state,
                   ReadJsonObject((dir / "train_state.json").string(), kMaxTrainStateBytes));
  return out;
}

absl::StatusOr<std::optional<ResumeChoice>> FindResumeCheckpoint(const std::string& root_dir) {
  const fs::path root(root_dir);
  std::error_code ec;
  if (!fs::exists(root, ec)) return std::optional<ResumeChoice>();
  if (!fs::is_directory(root, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint root ", root_dir, " is not a directory"));
  }
  std::vector<std::pair<int64_t, std::string>> steps;
  std::vector<std::string> uncommitted;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const int64_t step = ParseStepDirName(name);
    if (step >= 0 && e.is_directory(ec) && !e.is_symlink(ec)) steps.emplace_back(step, name);
    if (name.rfind(kTmpPrefix, 0) == 0) {
      uncommitted.push_back(absl::StrCat(name, ": uncommitted (interrupted save), ignored"));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root_dir, ": ", ec.message()));
  std::sort(steps.rbegin(), steps.rend());
  std::sort(uncommitted.begin(), uncommitted.end());
  ResumeChoice choice;
  for (const auto& [step, name] : steps) {
    absl::Status s = VerifyCheckpoint((root / name).string());
    if (s.ok()) {
      choice.step_dir = (root / name).string();
      choice.step = step;
      choice.skipped.insert(choice.skipped.end(), uncommitted.begin(), uncommitted.end());
      return std::optional<ResumeChoice>(std::move(choice));
    }
    choice.skipped.push_back(absl::StrCat(name, ": ", s.message()));
  }
  if (steps.empty()) return std::optional<ResumeChoice>();
  return absl::FailedPreconditionError(absl::StrCat(
      "no checkpoint under ", root_dir, " verifies: ", absl::StrJoin(choice.skipped, "; ")));
}

}  // namespace mt
