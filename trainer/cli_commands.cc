// trainer/cli_commands.cc: the train, eval, generate, export and report subcommands: their
// options, usage errors, and what each prints.
#include "trainer/cli_commands.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/indexed_dataset.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "data/tokenizer_factory.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/generate.h"
#include "trainer/hf_import.h"
#include "trainer/model_io.h"
#include "trainer/report.h"
#include "trainer/tokenizer_files.h"
#include "trainer/trainer.h"

namespace mt {
namespace {

// Where a checkpoint or an export keeps its tokenizer (trainer.cc writes it there).

int Fail(const std::string& cmd, const absl::Status& s) {
  std::fprintf(stderr, "%s: error: %s\n", cmd.c_str(), std::string(s.message()).c_str());
  return 1;
}

int UsageError(const char* usage, const std::string& msg) {
  std::fprintf(stderr, "%s\n\n%s", msg.c_str(), usage);
  return 2;
}

std::string One(const std::map<std::string, std::vector<std::string>>& o, const std::string& k,
                const std::string& def = "") {
  auto it = o.find(k);
  return it == o.end() ? def : it->second.back();
}

absl::StatusOr<int64_t> IntOption(const std::map<std::string, std::vector<std::string>>& o,
                                  const std::string& k, int64_t def) {
  std::string v = One(o, k);
  if (v.empty()) return def;
  try {
    size_t used = 0;
    int64_t x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  return absl::InvalidArgumentError(absl::StrCat("--", k, " expects an integer, got \"", v, "\""));
}

absl::StatusOr<double> DoubleOption(const std::map<std::string, std::vector<std::string>>& o,
                                    const std::string& k, double def) {
  std::string v = One(o, k);
  if (v.empty()) return def;
  try {
    size_t used = 0;
    double x = std::stod(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  return absl::InvalidArgumentError(absl::StrCat("--", k, " expects a number, got \"", v, "\""));
}

// A checkpoint step directory (or a plain HF directory) as a model, by name.
absl::StatusOr<std::unique_ptr<Model>> LoadModelDir(const std::string& dir) {
  ASSIGN_OR_RETURN(nlohmann::json cfg, ReadJsonObject(dir + "/config.json", 1 << 20));
  ASSIGN_OR_RETURN(ModelConfig mc, ModelConfigFromHfJson(cfg, dir + "/config.json"));
  auto model = std::make_unique<Model>(mc, 0);
  Model& m = *model;
  ASSIGN_OR_RETURN(HfModelDir hf, LoadHfModelDir(dir, [&](const std::string& name) {
                     return IsModelTensorName(m, name);
                   }));
  RETURN_IF_ERROR(LoadModelTensors(m, hf.tensors, dir));
  return model;
}

// Copies the tokenizer DIR carries (if any) into the exported directory `out`, each file
// under a temporary name first so that a tokenizer file there is always whole.
absl::Status CopyTokenizer(const std::string& dir, const std::string& out) {
  std::optional<std::string> tok = TokenizerInDirectory(dir);
  if (!tok) return absl::OkStatus();
  for (const auto& [name, from] : TokenizerFiles(*tok)) {
    const std::string tmp = out + "/." + name + ".tmp";
    RETURN_IF_ERROR(CopyFileDurably(from, tmp).status());
    if (std::rename(tmp.c_str(), (out + "/" + name).c_str()) != 0)
      return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", std::strerror(errno)));
  }
  return FsyncDir(out);
}

}  // namespace

absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseOptions(
    int argc, char** argv, const std::vector<std::string>& known) {
  std::map<std::string, std::vector<std::string>> out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      out["help"].push_back("");
      continue;
    }
    if (a.rfind("--", 0) != 0)
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", a, "\""));
    std::string key = a.substr(2), value;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", key, " needs a value"));
    }
    if (std::find(known.begin(), known.end(), key) == known.end())
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option --", key, " (known: --", absl::StrJoin(known, ", --"), ")"));
    out[key].push_back(value);
  }
  return out;
}

// ---- train ------------------------------------------------------------------------------
int RunTrainCommand(int argc, char** argv) {
  static const char kUsage[] =
      "usage: moetrain train --config FILE [--set key.path=value ...] [--resume auto|none|DIR]\n"
      "                      [--init-from HF_DIR]\n"
      "  Trains the model of a YAML config (configs/default.yaml is the embedded default).\n"
      "  --set overrides any key, e.g. --set training.steps=100. --resume and --init-from are\n"
      "  short for --set checkpoint.resume=... and --set training.init_from=...\n";
  auto opts = ParseOptions(argc, argv, {"config", "set", "resume", "init-from"});
  if (!opts.ok()) return UsageError(kUsage, std::string(opts.status().message()));
  if (opts->count("help")) return std::fputs(kUsage, stdout), 0;
  const std::string path = One(*opts, "config");
  if (path.empty()) return UsageError(kUsage, "--config is required");
  std::vector<std::string> overrides = (*opts)["set"];
  if (opts->count("resume")) overrides.push_back("checkpoint.resume=" + One(*opts, "resume"));
  if (opts->count("init-from"))
    overrides.push_back("training.init_from=" + One(*opts, "init-from"));
  auto cfg = LoadConfig(path, overrides);
  if (!cfg.ok()) return Fail(argv[0], cfg.status());
  auto out = RunTraining(*cfg);
  if (!out.ok()) return Fail(argv[0], out.status());
  if (!out->rank0) return 0;
  std::printf("[moetrain] done: %lld steps (%lld skipped), last train loss %.4f\n",
              static_cast<long long>(out->steps), static_cast<long long>(out->skipped_steps),
              out->last_train_loss);
  if (out->val_loss >= 0)
    std::printf(
        "[moetrain] validation loss: %.4f nats/token; unigram entropy of the same tokens: %.4f "
        "nats/token (%s)\n",
        out->val_loss, out->val_unigram_entropy,
        out->val_loss < out->val_unigram_entropy ? "the model beats the unigram baseline"
                                                 : "NOT below the unigram baseline");
  if (!out->sample.empty()) std::printf("[moetrain] sample: %s\n", out->sample.c_str());
  return 0;
}

// ---- eval -------------------------------------------------------------------------------
int RunEvalCommand(int argc, char** argv) {
  static const char kUsage[] =
      "usage: moetrain eval --checkpoint DIR --data PREFIX [--batches N] [--seq-len S]\n"
      "                     [--batch-size B] [--mtp-lambda L] [--balance-alpha A]\n"
      "  Prints one JSON line {\"loss\", \"mtp_loss\", \"balance_loss\", \"tokens\"} over\n"
      "  consecutive windows from the start of the dataset: window j is tokens\n"
      "  [j*S, j*S+S] inclusive, no shuffling (defaults: 8 batches of 8 windows of 128).\n";
  auto opts = ParseOptions(
      argc, argv,
      {"checkpoint", "data", "batches", "seq-len", "batch-size", "mtp-lambda", "balance-alpha"});
  if (!opts.ok()) return UsageError(kUsage, std::string(opts.status().message()));
  if (opts->count("help")) return std::fputs(kUsage, stdout), 0;
  const std::string ckpt = One(*opts, "checkpoint"), prefix = One(*opts, "data");
  if (ckpt.empty() || prefix.empty())
    return UsageError(kUsage, "--checkpoint and --data are required");
  auto batches = IntOption(*opts, "batches", 8);
  auto S = IntOption(*opts, "seq-len", 128);
  auto B = IntOption(*opts, "batch-size", 8);
  auto lambda = DoubleOption(*opts, "mtp-lambda", 0.3);
  auto alpha = DoubleOption(*opts, "balance-alpha", 0.0001);
  for (const absl::Status& s :
       {batches.status(), S.status(), B.status(), lambda.status(), alpha.status()})
    if (!s.ok()) return UsageError(kUsage, std::string(s.message()));
  if (*batches < 1 || *S < 1 || *B < 1)
    return UsageError(kUsage, "--batches, --seq-len and --batch-size must be >= 1");
  auto model = LoadModelDir(ckpt);
  if (!model.ok()) return Fail(argv[0], model.status());
  auto ds = data::IndexedDataset::Open(prefix);
  if (!ds.ok()) return Fail(argv[0], ds.status());
  if (auto s = (*ds)->CheckVocab((*model)->config().vocab_size); !s.ok()) return Fail(argv[0], s);
  auto val = data::ValidationSource::Create(
      std::shared_ptr<const data::IndexedDataset>(std::move(*ds)), *S);
  if (!val.ok()) return Fail(argv[0], val.status());
  const int64_t windows = std::min((*val)->num_windows(), *batches * *B);
  if (windows == 0)
    return Fail(argv[0], absl::InvalidArgumentError(
                             absl::StrCat(prefix, ": fewer than ", *S + 1, " tokens")));
  double loss = 0, bal = 0;
  std::vector<double> mtp((*model)->config().num_nextn_predict_layers, 0.0);
  std::vector<int32_t> tokens(*B * (*S + 1));
  for (int64_t j0 = 0; j0 < windows; j0 += *B) {
    const int64_t b = std::min(*B, windows - j0);
    for (int64_t i = 0; i < b; ++i) (*val)->Sample(j0 + i, tokens.data() + i * (*S + 1));
    Losses l = (*model)->Evaluate(tokens.data(), b, *S, {*lambda, *alpha});
    loss += l.main * b;
    bal += l.balance * b;
    for (size_t k = 0; k < mtp.size(); ++k) mtp[k] += l.mtp[k] * b;
  }
  for (double& x : mtp) x /= windows;
  nlohmann::json j = {{"loss", loss / windows},
                      {"mtp_loss", mtp},
                      {"balance_loss", bal / windows},
                      {"tokens", windows * *S}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// ---- generate ---------------------------------------------------------------------------
int RunGenerateCommand(int argc, char** argv) {
  static const char kUsage[] =
      "usage: moetrain generate --checkpoint DIR --prompt TEXT [--tokenizer FILE.model]\n"
      "                         [--max-tokens N] [--temperature T] [--top-p P] [--seed S]\n"
      "  The tokenizer defaults to the one DIR carries (tokenizer.model or tokenizer.json).\n";
  auto opts = ParseOptions(
      argc, argv,
      {"checkpoint", "prompt", "tokenizer", "max-tokens", "temperature", "top-p", "seed"});
  if (!opts.ok()) return UsageError(kUsage, std::string(opts.status().message()));
  if (opts->count("help")) return std::fputs(kUsage, stdout), 0;
  const std::string ckpt = One(*opts, "checkpoint");
  if (ckpt.empty() || !opts->count("prompt"))
    return UsageError(kUsage, "--checkpoint and --prompt are required");
  auto max_tokens = IntOption(*opts, "max-tokens", 64);
  auto temperature = DoubleOption(*opts, "temperature", 0.8);
  auto top_p = DoubleOption(*opts, "top-p", 0.95);
  auto seed = IntOption(*opts, "seed", 0);
  for (const absl::Status& s :
       {max_tokens.status(), temperature.status(), top_p.status(), seed.status()})
    if (!s.ok()) return UsageError(kUsage, std::string(s.message()));
  if (*top_p <= 0 || *top_p > 1 || *temperature < 0)
    return UsageError(kUsage, "--top-p must be in (0, 1] and --temperature >= 0");
  std::string tok_path = One(*opts, "tokenizer");
  if (tok_path.empty()) {
    std::optional<std::string> found = TokenizerInDirectory(ckpt);
    if (!found)
      return Fail(argv[0], absl::NotFoundError(absl::StrCat(
                               ckpt, " has no tokenizer.model or tokenizer.json (the run had no "
                               "data.tokenizer); pass --tokenizer FILE")));
    tok_path = *found;
  }
  auto tok = data::LoadTokenizer(tok_path);
  if (!tok.ok()) return Fail(argv[0], tok.status());
  auto model = LoadModelDir(ckpt);
  if (!model.ok()) return Fail(argv[0], model.status());
  std::vector<int32_t> prompt = (*tok)->Encode(One(*opts, "prompt"));
  if (prompt.empty()) prompt.push_back((*tok)->bos_id());
  SamplingOptions so{.max_tokens = *max_tokens,
                     .temperature = *temperature,
                     .top_p = *top_p,
                     .seed = static_cast<uint64_t>(*seed),
                     .stop_token = (*tok)->eos_id(),
                     .context = 0,
                     .vocab_limit = (*tok)->vocab_size()};
  std::vector<int32_t> gen = Generate(**model, prompt, so);
  prompt.insert(prompt.end(), gen.begin(), gen.end());
  std::printf("%s\n", (*tok)->Decode(prompt).c_str());
  return 0;
}

// ---- export -----------------------------------------------------------------------------
int RunExportCommand(int argc, char** argv) {
  static const char kUsage[] =
      "usage: moetrain export --checkpoint DIR --out DIR [--dtype bf16|fp32]\n"
      "  Writes a plain Hugging Face directory (config.json, safetensors shards, index; no\n"
      "  training state) that transformers loads as DeepseekV3ForCausalLM, plus the\n"
      "  checkpoint's tokenizer.model when it has one.\n";
  auto opts = ParseOptions(argc, argv, {"checkpoint", "out", "dtype"});
  if (!opts.ok()) return UsageError(kUsage, std::string(opts.status().message()));
  if (opts->count("help")) return std::fputs(kUsage, stdout), 0;
  const std::string ckpt = One(*opts, "checkpoint"), out = One(*opts, "out");
  const std::string dtype = One(*opts, "dtype", "bf16");
  if (ckpt.empty() || out.empty()) return UsageError(kUsage, "--checkpoint and --out are required");
  if (dtype != "bf16" && dtype != "fp32") return UsageError(kUsage, "--dtype must be bf16 or fp32");
  auto model = LoadModelDir(ckpt);
  if (!model.ok()) return Fail(argv[0], model.status());
  nlohmann::json cfg = ModelConfigToHfJson((*model)->config());
  cfg["torch_dtype"] = dtype == "bf16" ? "bfloat16" : "float32";
  if (auto s = ExportHfDir(out, cfg, ModelTensors(**model),
                           dtype == "bf16" ? DType::kBF16 : DType::kF32, int64_t{5} << 30);
      !s.ok())
    return Fail(argv[0], s);
  if (auto s = CopyTokenizer(ckpt, out); !s.ok()) return Fail(argv[0], s);
  std::printf("exported %s -> %s (%s)\n", ckpt.c_str(), out.c_str(), dtype.c_str());
  return 0;
}

// ---- report -------------------------------------------------------------------------------
int RunReportCommand(int argc, char** argv) {
  static const char kUsage[] =
      "usage: moetrain report RUN_DIR [--out FILE.html] [--png DIR]\n"
      "  Writes one self-contained HTML page about a training run: loss (training and\n"
      "  validation), MTP loss, lr, grad norm, tokens/s and MFU against tokens; per MoE layer a\n"
      "  heatmap of expert load / mean over steps and the router biases; the summary,\n"
      "  checkpoints and config. RUN_DIR holds the run's metrics.jsonl (logging.metrics_file;\n"
      "  or pass that file). Per-expert data come from its expert_load records, written every\n"
      "  logging.expert_load_interval steps. --out defaults to RUN_DIR/report.html; --png also\n"
      "  writes every chart as DIR/<chart>.png.\n";
  // The run directory is positional; the options parser takes the rest.
  std::vector<char*> rest = {argv[0]};
  std::string run_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("-", 0) == 0) {
      rest.push_back(argv[i]);
      const bool takes_value = a.rfind("--", 0) == 0 && a != "--help" && a.find('=') == a.npos;
      if (takes_value && i + 1 < argc) rest.push_back(argv[++i]);
    } else if (run_dir.empty()) {
      run_dir = a;
    } else {
      return UsageError(kUsage, absl::StrCat("unexpected argument \"", a, "\" after RUN_DIR"));
    }
  }
  auto opts = ParseOptions(static_cast<int>(rest.size()), rest.data(), {"out", "png"});
  if (!opts.ok()) return UsageError(kUsage, std::string(opts.status().message()));
  if (opts->count("help")) return std::fputs(kUsage, stdout), 0;
  if (run_dir.empty()) return UsageError(kUsage, "RUN_DIR is required");
  auto run = report::ReadRun(run_dir);
  if (!run.ok()) return Fail(argv[0], run.status());
  const std::string out =
      One(*opts, "out", (std::filesystem::path(run->run_dir) / "report.html").string());
  if (auto s = report::WriteReport(*run, out, One(*opts, "png")); !s.ok()) return Fail(argv[0], s);
  std::printf("[moetrain] report: %s\n", out.c_str());
  if (opts->count("png")) std::printf("[moetrain] charts: %s/*.png\n", One(*opts, "png").c_str());
  return 0;
}

}  // namespace mt
