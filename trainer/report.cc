#include "trainer/report.h"

#include <ctime>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status.h"
#include "trainer/report_png.h"
#include "trainer/report_svg.h"

namespace mt::report {
namespace {

constexpr Color kMain{31, 119, 180}, kVal{214, 39, 40};

// y(row) against tokens, one series.
Series RowSeries(const RunData& run, const std::string& name, Color color,
                 double (*y)(const MetricsRow&)) {
  Series s{name, {}, {}, color};
  for (const MetricsRow& r : run.rows) {
    s.x.push_back(r.tokens);
    s.y.push_back(y(r));
  }
  return s;
}

Figure TokensChart(const std::string& id, const std::string& title, const std::string& y_label,
                   std::vector<Series> series) {
  return LineChart({id, title, "tokens", y_label}, series);
}

std::string Duration(double s) {
  if (s < 0) return "unknown";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh %02dm %02ds", t / 3600, t % 3600 / 60, t % 60);
  if (t >= 60) return absl::StrFormat("%dm %02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

std::string Bytes(uint64_t b) {
  if (b >= (1ull << 30)) return absl::StrFormat("%.2f GiB", b / double(1ull << 30));
  if (b >= (1ull << 20)) return absl::StrFormat("%.1f MiB", b / double(1ull << 20));
  return absl::StrFormat("%.1f KiB", b / 1024.0);
}

std::string Row(const std::string& key, const std::string& value) {
  return absl::StrCat("<tr><th>", EscapeXml(key), "</th><td>", EscapeXml(value), "</td></tr>\n");
}

std::string SummaryTable(const RunData& run) {
  std::string t = "<table class=\"summary\">\n";
  t += Row("metrics file", run.metrics_file);
  if (!run.rows.empty()) {
    const MetricsRow& last = run.rows.back();
    const int64_t total =
        run.last_start() ? run.last_start()->config["training"].value("steps", int64_t{0}) : 0;
    t += Row("steps", total ? absl::StrCat(last.step, " of ", total) : absl::StrCat(last.step));
    t += Row("tokens", absl::StrFormat("%.0f (%s)", last.tokens, FormatTick(last.tokens)));
    t += Row("final training loss", absl::StrFormat("%.4f (mean of the last interval)", last.loss));
    for (size_t k = 0; k < last.mtp_loss.size(); ++k)
      t += Row(absl::StrCat("final MTP loss, depth ", k + 1),
               absl::StrFormat("%.4f", last.mtp_loss[k]));
    t += Row("final balance loss", absl::StrFormat("%.5f", last.balance_loss));
    t += Row("skipped steps", absl::StrCat(last.skipped_steps));
    double tps = 0, mfu = 0;
    for (const MetricsRow& r : run.rows) tps += r.tokens_per_s, mfu += r.mfu;
    t += Row("mean tokens/s, MFU",
             absl::StrFormat("%.0f, %.2f%%", tps / run.rows.size(), 100 * mfu / run.rows.size()));
  }
  if (!run.validation.empty())
    t += Row("final validation loss", absl::StrFormat("%.4f (step %d)", run.validation.back().loss,
                                                      run.validation.back().step));
  t += Row("wall time", Duration(run.wall_time_s) +
                            (run.starts.size() > 1
                                 ? absl::StrCat(" over ", run.starts.size(), " processes (resumed)")
                                 : ""));
  if (!run.starts.empty()) {
    const std::time_t when = static_cast<std::time_t>(run.starts.front().time);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", std::localtime(&when));
    t += Row("started", buf);
  }
  t += "</table>\n";
  return t;
}

std::string CheckpointTable(const RunData& run) {
  if (run.checkpoint_dir.empty()) return "<p>No checkpoint directory configured.</p>\n";
  std::string t = absl::StrCat("<p>", EscapeXml(run.checkpoint_dir), "</p>\n");
  if (run.checkpoints.empty()) return t + "<p>No checkpoints there.</p>\n";
  t += "<table class=\"summary\">\n<tr><th>step directory</th><th>state</th><th>size</th></tr>\n";
  for (const CheckpointEntry& c : run.checkpoints)
    absl::StrAppend(&t, "<tr><td>", EscapeXml(c.name), "</td><td>",
                    c.committed ? "committed" : "incomplete (no manifest)", "</td><td>",
                    Bytes(c.bytes), "</td></tr>\n");
  return t + "</table>\n";
}

constexpr char kStyle[] = R"(<style>
body { font-family: sans-serif; margin: 24px; color: #222; background: #f6f6f6; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
svg { background: #fff; border: 1px solid #ddd; }
table.summary { border-collapse: collapse; background: #fff; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; }
table.summary th { background: #f0f0f0; font-weight: normal; }
pre { background: #fff; border: 1px solid #ddd; padding: 10px; font-size: 12px; overflow: auto; }
p.note { color: #555; max-width: 1160px; }
</style>
)";

}  // namespace

std::vector<Figure> ReportFigures(const RunData& run) {
  std::vector<Figure> figs;
  Series val{"validation", {}, {}, kVal, false, true};
  for (const ValidationPoint& v : run.validation) {
    val.x.push_back(run.TokensAt(v.step));
    val.y.push_back(v.loss);
  }
  figs.push_back(TokensChart(
      "loss", "Loss", "cross-entropy (nats/token)",
      {RowSeries(run, "training", kMain, [](const MetricsRow& r) { return r.loss; }), val}));
  std::vector<Series> mtp;
  const size_t depth = run.rows.empty() ? 0 : run.rows.back().mtp_loss.size();
  for (size_t k = 0; k < depth; ++k) {
    Series s{absl::StrCat("MTP depth ", k + 1), {}, {}, SeriesColor(k + 1, depth + 1)};
    for (const MetricsRow& r : run.rows) {
      s.x.push_back(r.tokens);
      s.y.push_back(k < r.mtp_loss.size() ? r.mtp_loss[k] : NAN);
    }
    mtp.push_back(s);
  }
  mtp.push_back(RowSeries(run, "main", kMain, [](const MetricsRow& r) { return r.loss; }));
  mtp.back().dashed = true;
  figs.push_back(TokensChart("mtp_loss", "MTP loss", "cross-entropy (nats/token)", mtp));
  figs.push_back(TokensChart(
      "balance_loss", "Sequence-wise balance loss", "loss",
      {RowSeries(run, "balance", kMain, [](const MetricsRow& r) { return r.balance_loss; })}));
  figs.push_back(
      TokensChart("lr", "Learning rate", "lr",
                  {RowSeries(run, "lr", kMain, [](const MetricsRow& r) { return r.lr; })}));
  figs.push_back(TokensChart(
      "grad_norm", "Gradient norm (before clipping)", "global L2 norm",
      {RowSeries(run, "grad norm", kMain, [](const MetricsRow& r) { return r.grad_norm; })}));
  figs.push_back(TokensChart(
      "tokens_per_s", "Throughput", "tokens/s",
      {RowSeries(run, "tokens/s", kMain, [](const MetricsRow& r) { return r.tokens_per_s; })}));
  figs.push_back(
      TokensChart("mfu", "Model FLOPs utilisation", "MFU (%)",
                  {RowSeries(run, "MFU", kMain, [](const MetricsRow& r) { return 100 * r.mfu; })}));
  figs.push_back(
      TokensChart("load_max_over_mean", "Worst layer's max / mean expert load", "max / mean",
                  {RowSeries(run, "max/mean", kMain,
                             [](const MetricsRow& r) { return r.load_max_over_mean; })}));

  const RunStart* start = run.last_start();
  const size_t layers = run.expert_loads.empty() ? 0 : run.expert_loads[0].loads.size();
  for (size_t i = 0; i < layers; ++i) {
    const int64_t id = start ? start->moe_layers[i] : static_cast<int64_t>(i);
    const std::string name = absl::StrFormat("layer%02d", id);
    std::vector<int64_t> steps;
    std::vector<std::vector<double>> ratio;
    const size_t experts = run.expert_loads[0].loads[i].size();
    std::vector<Series> bias(experts);
    for (size_t e = 0; e < experts; ++e)
      bias[e] = {absl::StrCat("expert ", e), {}, {}, SeriesColor(e, experts)};
    bool have_biases = false;
    for (const ExpertLoadRecord& r : run.expert_loads) {
      steps.push_back(r.step);
      have_biases = have_biases || !r.biases[i].empty();
      double sum = 0;
      for (int64_t x : r.loads[i]) sum += static_cast<double>(x);
      std::vector<double> row;
      for (int64_t x : r.loads[i]) row.push_back(sum > 0 ? x / (sum / experts) : 0.0);
      ratio.push_back(std::move(row));
      for (size_t e = 0; e < experts && !r.biases[i].empty(); ++e) {
        bias[e].x.push_back(static_cast<double>(r.step));
        bias[e].y.push_back(r.biases[i][e]);
      }
    }
    figs.push_back(Heatmap({name + "_load", absl::StrCat("Layer ", id, ": expert load / mean")},
                           steps, ratio));
    LineChartOptions o{name + "_bias",
                       absl::StrCat("Layer ", id, ": router bias per expert",
                                    have_biases ? "" : " (not on rank 0's pipeline stage)"),
                       "step", "e_score_correction_bias"};
    o.width = 1160;
    o.height = 260;
    o.legend = experts <= 10;
    figs.push_back(LineChart(o, bias));
  }
  return figs;
}

std::string ReportHtml(const RunData& run, const std::vector<Figure>& figures) {
  std::string h = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>moetrain "
      "report: ",
      EscapeXml(run.run_dir), "</title>\n", kStyle,
      "</head>\n<body>\n<h1>moetrain report: ", EscapeXml(run.run_dir), "</h1>\n<h2>Summary</h2>\n",
      SummaryTable(run), "<h2>Training</h2>\n<div class=\"grid\">\n");
  for (const Figure& f : figures)
    if (f.id.rfind("layer", 0) != 0) h += FigureToSvg(f);
  h += "</div>\n<h2>Expert load and router bias, per MoE layer</h2>\n";
  if (run.expert_loads.empty()) {
    h += "<p class=\"note\">The metrics file has no expert_load records "
         "(logging.expert_load_interval was 0, or the run stopped before the first).</p>\n";
  } else {
    h += absl::StrCat(
        "<p class=\"note\">One column per expert_load record (every ",
        run.expert_loads.size() > 1 ? run.expert_loads[1].step - run.expert_loads[0].step : 0,
        " steps): the tokens each routed expert received in that step's global batch, over the "
        "mean of the layer's experts. Auxiliary-loss-free balancing raises the bias of "
        "under-loaded experts and lowers that of over-loaded ones, so a balancing run turns "
        "white from left to right while the biases spread apart.</p>\n");
    for (const Figure& f : figures)
      if (f.id.rfind("layer", 0) == 0) absl::StrAppend(&h, "<div>", FigureToSvg(f), "</div>\n");
  }
  h += "<h2>Checkpoints</h2>\n" + CheckpointTable(run);
  h += "<h2>Configuration</h2>\n";
  if (const RunStart* s = run.last_start())
    absl::StrAppend(&h, "<pre>", EscapeXml(s->config.dump(2)), "</pre>\n");
  else
    h += "<p>The metrics file has no run_start record.</p>\n";
  h += "</body>\n</html>\n";
  return h;
}

absl::Status WriteReport(const RunData& run, const std::string& html_path,
                         const std::string& png_dir) {
  const std::vector<Figure> figures = ReportFigures(run);
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::path(html_path).has_parent_path())
    fs::create_directories(fs::path(html_path).parent_path(), ec);
  {
    std::ofstream out(html_path, std::ios::binary | std::ios::trunc);
    out << ReportHtml(run, figures);
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", html_path));
  }
  if (png_dir.empty()) return absl::OkStatus();
  fs::create_directories(png_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", png_dir, ": ", ec.message()));
  for (const Figure& f : figures)
    RETURN_IF_ERROR(WriteFigurePng(f, (fs::path(png_dir) / (f.id + ".png")).string()));
  return absl::OkStatus();
}

}  // namespace mt::report
