#include "trainer/config_json.h"

namespace mt {
namespace {

using Json = nlohmann::json;

// The YAML form: a plain number for a constant, else [{until: T, <shape>: [a, b]}, ...].
Json ScheduleToJson(const Schedule& s) {
  if (s.segments.size() == 1 && s.segments[0].shape == Schedule::Shape::kConstant)
    return s.segments[0].start_value;
  Json out = Json::array();
  for (const Schedule::Segment& g : s.segments) {
    const char* shape = g.shape == Schedule::Shape::kLinear   ? "linear"
                        : g.shape == Schedule::Shape::kCosine ? "cosine"
                                                              : "constant";
    Json seg = {{"until", g.end_tokens}};
    seg[shape] = g.shape == Schedule::Shape::kConstant ? Json(g.start_value)
                                                       : Json::array({g.start_value, g.end_value});
    out.push_back(seg);
  }
  return out;
}

}  // namespace

Json ConfigToJson(const Config& c) {
  const TrainingConfig& t = c.training;
  Json training = {{"steps", t.steps},
                   {"seed", t.seed},
                   {"seq_len", t.seq_len},
                   {"micro_batch_size", t.micro_batch_size},
                   {"global_batch_size", t.global_batch_size},
                   {"precision", t.precision},
                   {"device", t.device},
                   {"mtp_lambda", ScheduleToJson(t.mtp_lambda)},
                   {"bias_update_speed", ScheduleToJson(t.bias_update_speed)},
                   {"balance_loss_alpha", t.balance_loss_alpha},
                   {"batch_ramp", t.batch_ramp ? Json{{"start", t.batch_ramp->start},
                                                      {"tokens", t.batch_ramp->tokens}}
                                               : Json(nullptr)},
                   {"eval_interval", t.eval_interval},
                   {"eval_batches", t.eval_batches},
                   {"max_consecutive_skips", t.max_consecutive_skips},
                   {"init_from", t.init_from},
                   {"recompute", t.recompute},
                   {"generate_tokens", t.generate_tokens},
                   {"generate_prompt", t.generate_prompt}};
  if (t.fault_inject_nan_step >= 0) {
    training["fault_inject_nan_step"] = t.fault_inject_nan_step;
    training["fault_inject_nan_count"] = t.fault_inject_nan_count;
  }
  const OptimizerConfig& o = c.optimizer;
  Json train_path = Json::array();
  for (size_t i = 0; i < c.data.train_path.size(); ++i) {
    if (c.data.train_path.size() > 1) train_path.push_back(c.data.train_weights.at(i));
    train_path.push_back(c.data.train_path[i]);
  }
  return {{"source", c.source},
          {"model", ModelConfigToHfJson(c.model)},
          {"training", training},
          {"optimizer",
           {{"lr", ScheduleToJson(o.lr)},
            {"beta1", o.beta1},
            {"beta2", o.beta2},
            {"eps", o.eps},
            {"weight_decay", o.weight_decay},
            {"grad_clip", o.grad_clip},
            {"moment_dtype", o.moment_dtype}}},
          {"data",
           {{"train_path", train_path},
            {"val_path", c.data.val_path},
            {"tokenizer", c.data.tokenizer}}},
          {"parallel",
           {{"pp", c.parallel.pp},
            {"ep", c.parallel.ep},
            {"dp", c.parallel.dp},
            {"schedule", c.parallel.schedule},
            {"ranks_per_node", c.parallel.ranks_per_node}}},
          {"checkpoint",
           {{"dir", c.checkpoint.dir},
            {"interval", c.checkpoint.interval},
            {"keep_last", c.checkpoint.keep_last},
            {"dtype", c.checkpoint.dtype},
            {"resume", c.checkpoint.resume}}},
          {"logging",
           {{"interval", c.logging.interval},
            {"metrics_file", c.logging.metrics_file},
            {"tensorboard_dir", c.logging.tensorboard_dir},
            {"expert_load_interval", c.logging.expert_load_interval}}}};
}

}  // namespace mt
