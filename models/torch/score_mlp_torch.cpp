// Placeholder replaced by the implementation (kept only until it lands).
#include "models/torch/score_mlp_torch.hpp"
