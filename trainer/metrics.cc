#include "trainer/metrics.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mt {

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
                      {"skipped_steps", m.skipped_steps}};
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
        {"moe/expert_load_max_over_mean", static_cast<float>(m.expert_load_max_over_mean)}};
    for (size_t k = 0; k < m.mtp_loss.size(); ++k)
      s.push_back({absl::StrCat("train/mtp_loss_", k + 1), static_cast<float>(m.mtp_loss[k])});
    RETURN_IF_ERROR(tb_->AddScalars(m.step, s));
  }
  return absl::OkStatus();
}

absl::Status MetricsLogger::LogEvent(const nlohmann::json& event) {
  if (jsonl_.is_open()) {
    jsonl_ << event.dump() << "\n";
    jsonl_.flush();
  }
  if (tb_ && event.contains("val_loss") && event.contains("step"))
    RETURN_IF_ERROR(tb_->AddScalars(event["step"].get<int64_t>(),
                                    {{"val/loss", event["val_loss"].get<float>()}}));
  return absl::OkStatus();
}

}  // namespace mt
