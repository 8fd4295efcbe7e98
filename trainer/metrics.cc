#include "trainer/metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "trainer/config_json.h"

namespace mt {
namespace {

double UnixTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::vector<int64_t> MoeLayerIds(const ModelConfig& m) {
  std::vector<int64_t> ids;
  for (int64_t l = 0; l < m.num_hidden_layers + m.num_nextn_predict_layers; ++l)
    if (m.IsMoeLayer(l)) ids.push_back(l);
  return ids;
}

double LoadMaxOverMean(const std::vector<int64_t>& load) {
  double sum = 0, mx = 0;
  for (int64_t x : load) {
    sum += static_cast<double>(x);
    mx = std::max(mx, static_cast<double>(x));
  }
  return sum > 0 ? mx / (sum / static_cast<double>(load.size())) : 0.0;
}

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t % 3600) / 60);
  if (t >= 60) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

absl::StatusOr<std::unique_ptr<MetricsLogger>> MetricsLogger::Create(
    const std::string& metrics_file, const std::string& tensorboard_dir, bool print) {
  auto logger = std::unique_ptr<MetricsLogger>(new MetricsLogger());
  logger->print_ = print;
  if (!metrics_file.empty()) {
    std::filesystem::path p(metrics_file);
    std::error_code ec;
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
    logger->jsonl_.open(metrics_file, std::ios::app);
    if (!logger->jsonl_)
      return absl::InvalidArgumentError(
          absl::StrCat("logging.metrics_file: cannot open ", metrics_file, " for appending"));
    logger->jsonl_path_ = metrics_file;
  }
  if (!tensorboard_dir.empty()) {
    auto tb = TensorBoardWriter::Create(tensorboard_dir);
    if (!tb.ok()) return Annotate(tb.status(), "logging.tensorboard_dir");
    logger->tb_ = std::move(*tb);
  }
  return logger;
}

absl::Status MetricsLogger::LogRunStart(const Config& config, int64_t first_step) {
  moe_layer_ids_ = MoeLayerIds(config.model);
  expert_load_interval_ = config.logging.expert_load_interval;
  load_ratio_sum_.assign(moe_layer_ids_.size(), 0.0);
  load_steps_ = 0;
  std::error_code ec;
  const std::filesystem::path cwd = std::filesystem::current_path(ec);
  return LogEvent({{"event", "run_start"},
                   {"time", UnixTime()},
                   {"cwd", cwd.string()},
                   {"moe_layers", moe_layer_ids_},
                   {"first_step", first_step},
                   {"config", ConfigToJson(config)}});
}

absl::Status MetricsLogger::ObserveExperts(int64_t step, double tokens,
                                           const std::vector<std::vector<int64_t>>& loads,
                                           const std::vector<std::vector<float>>& biases) {
  // A mismatch is a caller's bug, but it would silently mislabel every layer of the report.
  if (loads.size() != moe_layer_ids_.size() || biases.size() != loads.size())
    return absl::InternalError(absl::StrCat("expert loads for ", loads.size(), " and biases for ",
                                            biases.size(), " MoE layers, but the config has ",
                                            moe_layer_ids_.size(), " (was LogRunStart called?)"));
  for (size_t i = 0; i < loads.size(); ++i) load_ratio_sum_[i] += LoadMaxOverMean(loads[i]);
  ++load_steps_;
  biases_ = biases;
  if (expert_load_interval_ > 0 && step % expert_load_interval_ == 0)
    return LogEvent({{"event", "expert_load"},
                     {"step", step},
                     {"tokens", tokens},
                     {"loads", loads},
                     {"biases", biases}});
  return absl::OkStatus();
}

absl::Status MetricsLogger::Log(const StepMetrics& m) {
  double mtp = 0;
  for (double l : m.mtp_loss) mtp += l;
  if (!m.mtp_loss.empty()) mtp /= static_cast<double>(m.mtp_loss.size());
  if (print_) {
    std::printf(
        "step %6lld/%lld | tokens %9.3fM | loss %.4f | mtp %.4f | bal %.4f | lr %.3e | "
        "gnorm %.3f | %7.0f tok/s | MFU %5.1f%% | load max/mean %.2f | ETA %s%s\n",
        static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.tokens / 1e6,
        m.loss, mtp, m.balance_loss, m.lr, m.grad_norm, m.tokens_per_s, 100 * m.mfu,
        m.expert_load_max_over_mean, FormatDuration(m.eta_s).c_str(),
        m.skipped_steps ? absl::StrCat(" | skipped ", m.skipped_steps).c_str() : "");
    std::fflush(stdout);
  }
  nlohmann::json j = {{"step", m.step},
                      {"tokens", m.tokens},
                      {"loss", m.loss},
                      {"mtp_loss", m.mtp_loss},
                      {"balance_loss", m.balance_loss},
                      {"lr", m.lr},
                      {"grad_norm", m.grad_norm},
                      {"tokens_per_s", m.tokens_per_s},
                      {"mfu", m.mfu},
                      {"expert_load_max_over_mean", m.expert_load_max_over_mean},
                      {"eta_s", m.eta_s},
                      {"skipped_steps", m.skipped_steps},
                      {"time", UnixTime()}};
  if (jsonl_.is_open()) {
    jsonl_ << j.dump() << "\n";
    jsonl_.flush();
    if (!jsonl_) return absl::InternalError(absl::StrCat("writing ", jsonl_path_));
  }
  if (tb_) {
    std::vector<std::pair<std::string, float>> s = {
        {"train/loss", static_cast<float>(m.loss)},
        {"train/balance_loss", static_cast<float>(m.balance_loss)},
        {"train/lr", static_cast<float>(m.lr)},
        {"train/grad_norm", static_cast<float>(m.grad_norm)},
        {"perf/tokens_per_s", static_cast<float>(m.tokens_per_s)},
        {"perf/mfu", static_cast<float>(m.mfu)},
        {"moe/expert_load_max_over_mean", static_cast<float>(m.expert_load_max_over_mean)},
        {"train/skipped_steps", static_cast<float>(m.skipped_steps)}};
    for (size_t k = 0; k < m.mtp_loss.size(); ++k)
      s.push_back({absl::StrCat("train/mtp_loss_", k + 1), static_cast<float>(m.mtp_loss[k])});
    for (size_t i = 0; i < moe_layer_ids_.size(); ++i) {
      // Two digits keep TensorBoard's alphabetical tag order the layer order.
      const std::string layer = absl::StrFormat("moe/layer%02d/", moe_layer_ids_[i]);
      if (load_steps_ > 0)
        s.push_back({layer + "load_max_over_mean",
                     static_cast<float>(load_ratio_sum_[i] / static_cast<double>(load_steps_))});
      if (i < biases_.size() && !biases_[i].empty()) {
        const auto [lo, hi] = std::minmax_element(biases_[i].begin(), biases_[i].end());
        s.push_back({layer + "bias_spread", *hi - *lo});
      }
    }
    RETURN_IF_ERROR(tb_->AddScalars(m.step, s));
  }
  std::fill(load_ratio_sum_.begin(), load_ratio_sum_.end(), 0.0);
  load_steps_ = 0;
  return absl::OkStatus();
}

absl::Status MetricsLogger::LogEvent(const nlohmann::json& event) {
  if (jsonl_.is_open()) {
    jsonl_ << event.dump() << "\n";
    jsonl_.flush();
    if (!jsonl_) return absl::InternalError(absl::StrCat("writing ", jsonl_path_));
  }
  if (tb_ && event.contains("val_loss") && event.contains("step"))
    RETURN_IF_ERROR(tb_->AddScalars(event["step"].get<int64_t>(),
                                    {{"val/loss", event["val_loss"].get<float>()}}));
  return absl::OkStatus();
}

}  // namespace mt
