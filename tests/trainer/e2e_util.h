// tests/trainer/e2e_util.h: end-to-end tests of the `moetrain` binary: a temporary
// directory, a tiny generated corpus prepared with `moetrain prepare`, a tiny model config,
// running the binary (optionally with extra environment variables), and byte-for-byte
// comparisons of checkpoints and metrics files.
//
// The binary's path comes from the MOETRAIN_BIN compile definition (CMake passes
// $<TARGET_FILE:moetrain>). Children inherit the environment (tests/run.sh pins the thread
// counts); the runs a test compares always share it.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainer/safetensors.h"

#ifndef MOETRAIN_BIN
#error "MOETRAIN_BIN must name the moetrain executable"
#endif

namespace mt::e2e {

namespace fs = std::filesystem;

// A fresh directory under $TMPDIR, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mt_e2e_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that killed it, 0 if it exited
  std::string output;  // stdout and stderr, interleaved
};

// Runs `moetrain args...` with `env` added to the environment and waits for it.
inline CommandResult RunMoetrain(const std::vector<std::string>& args,
                                 const std::map<std::string, std::string>& env = {}) {
  CommandResult r;
  char log_tmpl[] = "/tmp/mt_e2e_log_XXXXXX";
  const int log_fd = ::mkstemp(log_tmpl);
  if (log_fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return r;
  }
  std::vector<std::string> argv_s = {MOETRAIN_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::execv(argv[0], argv.data());
    std::perror("execv");
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(log_fd);
  r.output = ReadFile(log_tmpl);
  ::unlink(log_tmpl);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

// Runs moetrain and expects exit code 0, printing its output otherwise.
inline std::string RunOk(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& env = {}) {
  CommandResult r = RunMoetrain(args, env);
  EXPECT_EQ(r.exit_code, 0) << "moetrain " << ::testing::PrintToString(args) << ":\n" << r.output;
  return r.output;
}

struct TinyData {
  std::string train, val, tokenizer;  // dataset prefixes and the SentencePiece model
};

// Writes a generated corpus (blank-line separated documents over a small word list) and
// prepares it with `moetrain prepare` into a 300-token vocabulary.
inline TinyData PrepareTinyData(const TempDir& dir) {
  static const char* kWords[] = {
      "the",    "cat",   "sat",   "on",     "a",       "mat",   "and",    "dog",     "ran",
      "far",    "away",  "from",  "home",   "while",   "birds", "sang",   "in",      "trees",
      "quiet",  "river", "flows", "under",  "old",     "stone", "bridge", "zebra",   "jumps",
      "over",   "lazy",  "fox",   "people", "walked",  "along", "narrow", "streets", "toward",
      "market", "where", "fresh", "bread",  "was",     "sold",  "every",  "morning", "by",
      "bakers", "who",   "woke",  "before", "sunrise", "light", "rain",   "fell",    "softly",
      "across", "green", "hills", "until",  "evening", "came"};
  std::mt19937 rng(11);
  std::string text;
  for (int d = 0; d < 160; ++d) {
    const int n = 20 + static_cast<int>(rng() % 60);
    for (int i = 0; i < n; ++i) {
      text += i ? " " : "";
      text += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
      if (rng() % 9 == 0) text += ".";
    }
    text += "\n\n";
  }
  WriteFile(dir / "corpus.txt", text);
  RunOk({"prepare", "--input", dir / "corpus.txt", "--output", dir / "tiny", "--vocab-size", "300",
         "--val-fraction", "0.1", "--split-blank-lines", "--seed", "3", "--no-progress"});
  return {dir / "tiny-train", dir / "tiny-val", dir / "tiny.model"};
}

// A tiny DeepseekV3 (q LoRA, expert groups, a shared expert, one dense layer, MTP depth 1)
// with 2 micro-batches per step; writes it to dir/config.yaml and returns that path.
inline std::string WriteTinyConfig(const TempDir& dir, const TinyData& data) {
  const std::string yaml = R"(model:
  vocab_size: 320
  hidden_size: 32
  intermediate_size: 64
  moe_intermediate_size: 16
  num_hidden_layers: 2
  num_attention_heads: 2
  num_key_value_heads: 2
  n_routed_experts: 4
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 2
  topk_group: 1
  first_k_dense_replace: 1
  q_lora_rank: 16
  kv_lora_rank: 16
  qk_nope_head_dim: 8
  qk_rope_head_dim: 4
  v_head_dim: 8
  num_nextn_predict_layers: 1
  max_position_embeddings: 64
  rope_scaling: null
  bos_token_id: 1
  eos_token_id: 2
training:
  steps: 6
  seed: 77
  seq_len: 16
  micro_batch_size: 2
  global_batch_size: 4
  mtp_lambda: 0.3
  bias_update_speed: 0.01
  balance_loss_alpha: 0.001
  eval_batches: 2
  generate_tokens: 0
optimizer:
  lr: [{until: 200, linear: [0, 1.0e-2]}, {until: 2000, cosine: [1.0e-2, 1.0e-3]}]
  weight_decay: 0.1
  grad_clip: 1.0
data:
  train_path: )" + data.train +
                           R"(
  val_path: )" + data.val + R"(
  tokenizer: )" + data.tokenizer +
                           R"(
checkpoint:
  keep_last: 100
logging:
  interval: 1
)";
  const std::string path = dir / "config.yaml";
  WriteFile(path, yaml);
  return path;
}

// Every line of a JSON-lines file.
inline std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// step -> the exact bits of the logged main loss. A step logged twice (by a run that died
// after logging it and by the run that resumed before it) must have logged the same value.
inline std::map<int64_t, double> LossesByStep(const std::string& metrics_file) {
  std::map<int64_t, double> out;
  for (const nlohmann::json& j : ReadJsonLines(metrics_file)) {
    if (!j.contains("loss")) continue;  // events (validation, skipped steps)
    const int64_t step = j.at("step").get<int64_t>();
    const double loss = j.at("loss").get<double>();
    auto [it, fresh] = out.emplace(step, loss);
    if (!fresh) {
      EXPECT_EQ(std::memcmp(&it->second, &loss, sizeof(double)), 0)
          << metrics_file << ": step " << step << " logged twice with different losses";
    }
  }
  return out;
}

inline bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Every tensor of two safetensors files, by name: same names, dtypes, shapes and bytes.
inline void ExpectSameSafetensors(const std::string& a, const std::string& b) {
  absl::StatusOr<SafetensorsFile> fa = SafetensorsFile::Open(a);
  absl::StatusOr<SafetensorsFile> fb = SafetensorsFile::Open(b);
  ASSERT_TRUE(fa.ok()) << fa.status();
  ASSERT_TRUE(fb.ok()) << fb.status();
  const std::set<std::string> na(fa->names().begin(), fa->names().end());
  const std::set<std::string> nb(fb->names().begin(), fb->names().end());
  ASSERT_EQ(na, nb) << a << " vs " << b;
  for (const std::string& name : na) {
    absl::StatusOr<Tensor> ta = fa->Read(name), tb = fb->Read(name);
    ASSERT_TRUE(ta.ok() && tb.ok()) << name;
    EXPECT_TRUE(SameBytes(*ta, *tb)) << a << " vs " << b << ": tensor " << name << " differs";
  }
}

// The *.safetensors files of a step directory (model shards and state files).
inline std::set<std::string> SafetensorsFiles(const std::string& step_dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(step_dir))
    if (e.path().extension() == ".safetensors") out.insert(e.path().filename().string());
  return out;
}

// Two step directories hold the same training state: every safetensors file tensor by
// tensor (parameters, router biases, AdamW moments, master weights), and train_state.json.
inline void ExpectSameCheckpoint(const std::string& a, const std::string& b) {
  const std::set<std::string> files = SafetensorsFiles(a);
  ASSERT_EQ(files, SafetensorsFiles(b)) << a << " vs " << b;
  EXPECT_TRUE(files.count("optimizer-exp_avg.safetensors")) << a;
  EXPECT_TRUE(files.count("optimizer-exp_avg_sq.safetensors")) << a;
  for (const std::string& f : files) ExpectSameSafetensors(a + "/" + f, b + "/" + f);
  EXPECT_EQ(nlohmann::json::parse(ReadFile(a + "/train_state.json")),
            nlohmann::json::parse(ReadFile(b + "/train_state.json")));
}

}  // namespace mt::e2e
