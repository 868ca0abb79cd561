// Small TorchScript modules for the network tests, exported once per test process by Debian's
// Python with PyTorch (python3-torch; /usr/bin/python3, not whatever python3 comes first on PATH),
// into a temporary folder removed at exit. Each module's formula is stated here so that a test
// can compute what it must return:
//   affine.pt        (x [N,2], t [N]) -> tanh(x W^T + t c), W = [[0.3, -0.2], [0.1, 0.4]], c = [0.5, -0.7]
//   gauss_x0.pt      (x~, sigma~) -> x~ v / (v + sigma~^2), v = 0.25: the exact denoiser of N(0, v I) data
//   gauss_eps_vp.pt  (x, t) -> sigma x / (alpha^2 v + sigma^2), v = 0.25, alpha and sigma of the linear VP
//                    process (beta 0.1 to 20): the exact eps of N(0, v I) data under that process
//   mlp.pt           (x, t) -> a seeded 3-32-32-2 SiLU MLP of [x, t] (float64 weights)
//   edm_mlp.pt       (x~, sigma~) -> c_skip x~ + c_out F(c_in x~, log(sigma~) / 4): an EDM-preconditioned
//                    denoiser (sigma_data 0.5) around a 3-16-2 tanh MLP F with weights drawn from its own
//                    generator (seed 7), so its formula has no closed form to test against
//   classes.pt       (x, t, class) -> 0 x + class + t
//   flow.pt          (x, t) -> 0.3 x - t
//   wrong_shape.pt   (x, t) -> x[:, :1]
//   wrong_arity.pt   (x) -> x
//   wrong_dtype.pt   (x, t) -> x as float32
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace diffode::testing {

inline constexpr const char* kExportScript = R"PY(
import sys
import torch

out = sys.argv[1]
torch.manual_seed(0)


class Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor([0.5, -0.7], dtype=torch.float64))

    def forward(self, x, t):
        return torch.tanh(x @ self.w.t() + t[:, None] * self.c)


class GaussX0(torch.nn.Module):
    def forward(self, x, s):
        return x * (0.25 / (0.25 + s[:, None] ** 2))


class GaussEpsVp(torch.nn.Module):
    def forward(self, x, t):
        log_alpha = (-0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1)[:, None]
        alpha = torch.exp(log_alpha)
        sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))
        return sigma * x / (alpha * alpha * 0.25 + sigma * sigma)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 32), torch.nn.SiLU(),
                                       torch.nn.Linear(32, 2)).double()

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


class EdmMlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.w1 = torch.nn.Parameter(torch.randn(16, 3, generator=g, dtype=torch.float64))
        self.b1 = torch.nn.Parameter(0.5 * torch.randn(16, generator=g, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(0.5 * torch.randn(2, 16, generator=g, dtype=torch.float64))
        self.b2 = torch.nn.Parameter(0.1 * torch.randn(2, generator=g, dtype=torch.float64))

    def forward(self, x, s):
        v = s[:, None] ** 2 + 0.25
        features = torch.cat([x / torch.sqrt(v), torch.log(s)[:, None] / 4.0], 1)
        f = torch.tanh(features @ self.w1.t() + self.b1) @ self.w2.t() + self.b2
        return x * (0.25 / v) + f * (0.5 * s[:, None] / torch.sqrt(v))


class Classes(torch.nn.Module):
    def forward(self, x, t, c):
        return 0.0 * x + c[:, None].to(x.dtype) + t[:, None]


class Flow(torch.nn.Module):
    def forward(self, x, t):
        return 0.3 * x - t[:, None]


class WrongShape(torch.nn.Module):
    def forward(self, x, t):
        return x[:, :1]


class WrongArity(torch.nn.Module):
    def forward(self, x):
        return x


class WrongDtype(torch.nn.Module):
    def forward(self, x, t):
        return x.float()


for name, module in [("affine", Affine()), ("gauss_x0", GaussX0()), ("gauss_eps_vp", GaussEpsVp()), ("mlp", Mlp()),
                     ("classes", Classes()), ("flow", Flow()), ("wrong_shape", WrongShape()), ("wrong_arity", WrongArity()),
                     ("wrong_dtype", WrongDtype()), ("edm_mlp", EdmMlp())]:
    torch.jit.script(module).save(f"{out}/{name}.pt")
)PY";

// The folder holding the modules, or an empty path when /usr/bin/python3 cannot export them (the
// caller skips, saying so). Exported on first call; removed when the process exits.
inline const std::filesystem::path& torchscript_modules() {
  struct Folder {
    std::filesystem::path path;
    ~Folder() {
      std::error_code error;
      if (!path.empty()) std::filesystem::remove_all(path, error);
    }
  };
  static Folder folder;
  static const bool exported = [] {
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("diffode_torchscript_{}", ::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "export.py") << kExportScript;
    const std::string command = fmt::format("/usr/bin/python3 '{}' '{}' > '{}' 2>&1", (dir / "export.py").string(), dir.string(),
                                            (dir / "export.log").string());
    if (std::system(command.c_str()) != 0) {
      std::filesystem::remove_all(dir);
      return false;
    }
    folder.path = dir;
    return true;
  }();
  (void)exported;
  return folder.path;
}

inline constexpr const char* kNoPythonTorch =
    "these tests export TorchScript modules with /usr/bin/python3 and PyTorch (Debian's python3-torch), which cannot import torch here";

}  // namespace diffode::testing
