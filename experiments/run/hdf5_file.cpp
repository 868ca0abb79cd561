#include "experiments/run/hdf5_file.hpp"

#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace diffode {
namespace {

// HDF5 prints its own error stack to stderr by default; errors here become exceptions with the
// file and the object named instead.
struct SilenceHdf5 {
  SilenceHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
} silence_hdf5;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw std::runtime_error(fmt::format("{}: {}", path.string(), what));
}

// Closes an HDF5 identifier at scope exit.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

}  // namespace

Hdf5File::Hdf5File(const std::filesystem::path& path, Mode mode) : path_(path) {
  if (mode == Mode::read) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail(path, "no such file");
    // A FIFO would block the open until a writer came, a device could be endless: files only.
    if (!std::filesystem::is_regular_file(path, ec)) fail(path, "not a regular file");
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  } else {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    file_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  }
  if (file_ < 0) fail(path, mode == Mode::read ? "cannot open as HDF5" : "cannot create HDF5 file");
}

Hdf5File::~Hdf5File() {
  if (file_ >= 0) H5Fclose(static_cast<hid_t>(file_));
}

void Hdf5File::close() {
  if (file_ < 0) return;
  const herr_t status = H5Fclose(static_cast<hid_t>(file_));
  file_ = -1;
  if (status < 0) fail(path_, "cannot write the file out (no space left on the device, or the file is too large?)");
}

void Hdf5File::flush() { H5Fflush(static_cast<hid_t>(file_), H5F_SCOPE_GLOBAL); }

bool Hdf5File::has(const std::string& name) const {
  if (name.empty()) return false;
  // H5Lexists needs every intermediate link to exist; check them one by one.
  std::string prefix;
  std::size_t start = name.front() == '/' ? 1 : 0;
  while (start <= name.size()) {
    const std::size_t slash = name.find('/', start);
    prefix = name.substr(0, slash == std::string::npos ? name.size() : slash);
    if (H5Lexists(static_cast<hid_t>(file_), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

void Hdf5File::ensure_parent_groups(const std::string& name) {
  std::size_t pos = name.front() == '/' ? 1 : 0;
  while ((pos = name.find('/', pos)) != std::string::npos) {
    const std::string group = name.substr(0, pos);
    if (!group.empty() && H5Lexists(static_cast<hid_t>(file_), group.c_str(), H5P_DEFAULT) <= 0) {
      Handle g{H5Gcreate2(static_cast<hid_t>(file_), group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose};
      if (g.id < 0) fail(path_, fmt::format("cannot create group '{}'", group));
    }
    ++pos;
  }
}

void Hdf5File::write_matrix(const std::string& name, const Batch& values) {
  ensure_parent_groups(name);
  const hsize_t dims[2] = {static_cast<hsize_t>(values.rows()), static_cast<hsize_t>(values.cols())};
  Handle space{H5Screate_simple(2, dims, nullptr), H5Sclose};
  Handle set{H5Dcreate2(static_cast<hid_t>(file_), name.c_str(), H5T_IEEE_F64LE, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             H5Dclose};
  if (set.id < 0) fail(path_, fmt::format("cannot create dataset '{}'", name));
  if (H5Dwrite(set.id, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    fail(path_, fmt::format("cannot write dataset '{}'", name));
}

void Hdf5File::write_vector(const std::string& name, const std::vector<double>& values) {
  ensure_parent_groups(name);
  const hsize_t dims[1] = {static_cast<hsize_t>(values.size())};
  Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  Handle set{H5Dcreate2(static_cast<hid_t>(file_), name.c_str(), H5T_IEEE_F64LE, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             H5Dclose};
  if (set.id < 0) fail(path_, fmt::format("cannot create dataset '{}'", name));
  if (H5Dwrite(set.id, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    fail(path_, fmt::format("cannot write dataset '{}'", name));
}

void Hdf5File::write_int64_vector(const std::string& name, const std::vector<std::int64_t>& values) {
  ensure_parent_groups(name);
  const hsize_t dims[1] = {static_cast<hsize_t>(values.size())};
  Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  Handle set{H5Dcreate2(static_cast<hid_t>(file_), name.c_str(), H5T_STD_I64LE, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             H5Dclose};
  if (set.id < 0) fail(path_, fmt::format("cannot create dataset '{}'", name));
  if (H5Dwrite(set.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    fail(path_, fmt::format("cannot write dataset '{}'", name));
}

std::vector<std::int64_t> Hdf5File::read_int64_vector(const std::string& name) const {
  const auto [rows, cols] = shape(name);
  if (cols != 1) fail(path_, fmt::format("dataset '{}' is {} x {}, not a vector", name, rows, cols));
  Handle set{H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose};
  std::vector<std::int64_t> out(static_cast<std::size_t>(rows));
  if (H5Dread(set.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail(path_, fmt::format("cannot read dataset '{}' as int64", name));
  return out;
}

Batch Hdf5File::read_matrix(const std::string& name) const {
  const auto [rows, cols] = shape(name);  // a rank-1 dataset is one column
  const double bytes = 8.0 * static_cast<double>(rows) * static_cast<double>(cols);
  const double physical = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (physical > 0 && bytes > physical)
    fail(path_, fmt::format("dataset '{}' is {} x {}: {:.3g} GiB, more than this machine's {:.3g} GiB of memory", name, rows, cols,
                            bytes / (1 << 30), physical / (1 << 30)));
  Handle set{H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose};
  Batch out(rows, cols);
  if (H5Dread(set.id, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail(path_, fmt::format("cannot read dataset '{}' as float64", name));
  return out;
}

std::pair<Index, Index> Hdf5File::shape(const std::string& name) const {
  if (!has(name)) fail(path_, fmt::format("no dataset '{}'", name));
  Handle set{H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose};
  if (set.id < 0) fail(path_, fmt::format("'{}' is not a dataset", name));
  Handle space{H5Dget_space(set.id), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  if (rank < 1 || rank > 2) fail(path_, fmt::format("dataset '{}' has rank {}, expected 1 or 2", name, rank));
  hsize_t dims[2] = {0, 1};
  H5Sget_simple_extent_dims(space.id, dims, nullptr);
  return {static_cast<Index>(dims[0]), static_cast<Index>(dims[1])};
}

Batch Hdf5File::read_rows(const std::string& name, Index first, Index count) const {
  const auto [rows, cols] = shape(name);
  if (first < 0 || count < 0 || first + count > rows)
    fail(path_, fmt::format("dataset '{}' has {} rows: cannot read rows {}..{}", name, rows, first, first + count - 1));
  Batch out(count, cols);
  if (count == 0) return out;
  Handle set{H5Dopen2(static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT), H5Dclose};
  Handle space{H5Dget_space(set.id), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  const hsize_t start[2] = {static_cast<hsize_t>(first), 0}, extent[2] = {static_cast<hsize_t>(count), static_cast<hsize_t>(cols)};
  if (H5Sselect_hyperslab(space.id, H5S_SELECT_SET, start, nullptr, extent, nullptr) < 0)
    fail(path_, fmt::format("cannot select rows of dataset '{}'", name));
  Handle memory{H5Screate_simple(rank, extent, nullptr), H5Sclose};
  if (H5Dread(set.id, H5T_NATIVE_DOUBLE, memory.id, space.id, H5P_DEFAULT, out.data()) < 0)
    fail(path_, fmt::format("cannot read dataset '{}' as float64", name));
  return out;
}

std::vector<double> Hdf5File::read_vector(const std::string& name) const {
  const Batch m = read_matrix(name);
  if (m.cols() != 1 && m.rows() != 1)
    fail(path_, fmt::format("dataset '{}' is {} x {}, expected a vector", name, m.rows(), m.cols()));
  return std::vector<double>(m.data(), m.data() + m.size());
}

void Hdf5File::write_attribute(const std::string& object, const std::string& name, const std::string& value) {
  // Variable-length UTF-8, which h5py reads back as str.
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, H5T_VARIABLE);
  H5Tset_cset(type.id, H5T_CSET_UTF8);
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  if (H5Aexists_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT) > 0)
    H5Adelete_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT);
  Handle attr{H5Acreate_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), type.id, space.id, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose};
  const char* text = value.c_str();
  if (attr.id < 0 || H5Awrite(attr.id, type.id, &text) < 0)
    fail(path_, fmt::format("cannot write attribute '{}' on '{}'", name, object));
}

void Hdf5File::write_attribute(const std::string& object, const std::string& name, double value) {
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  if (H5Aexists_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT) > 0)
    H5Adelete_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT);
  Handle attr{H5Acreate_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5T_IEEE_F64LE, space.id, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose};
  if (attr.id < 0 || H5Awrite(attr.id, H5T_NATIVE_DOUBLE, &value) < 0)
    fail(path_, fmt::format("cannot write attribute '{}' on '{}'", name, object));
}

std::string Hdf5File::read_string_attribute(const std::string& object, const std::string& name) const {
  Handle attr{H5Aopen_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0) fail(path_, fmt::format("no attribute '{}' on '{}'", name, object));
  Handle type{H5Aget_type(attr.id), H5Tclose};
  if (H5Tis_variable_str(type.id) > 0) {
    char* text = nullptr;
    Handle mem{H5Tcopy(H5T_C_S1), H5Tclose};
    H5Tset_size(mem.id, H5T_VARIABLE);
    H5Tset_cset(mem.id, H5Tget_cset(type.id));
    if (H5Aread(attr.id, mem.id, &text) < 0) fail(path_, fmt::format("cannot read attribute '{}'", name));
    std::string out = text ? text : "";
    H5free_memory(text);
    return out;
  }
  std::string out(H5Tget_size(type.id), '\0');
  if (H5Aread(attr.id, type.id, out.data()) < 0) fail(path_, fmt::format("cannot read attribute '{}'", name));
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}

double Hdf5File::read_double_attribute(const std::string& object, const std::string& name) const {
  Handle attr{H5Aopen_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0) fail(path_, fmt::format("no attribute '{}' on '{}'", name, object));
  double value = 0;
  if (H5Aread(attr.id, H5T_NATIVE_DOUBLE, &value) < 0) fail(path_, fmt::format("attribute '{}' on '{}' is not a number", name, object));
  return value;
}

bool Hdf5File::has_attribute(const std::string& object, const std::string& name) const {
  return has(object) && H5Aexists_by_name(static_cast<hid_t>(file_), object.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

void Hdf5File::create_group(const std::string& name) {
  ensure_parent_groups(name + "/");
}

std::vector<std::string> Hdf5File::members(const std::string& group) const {
  std::vector<std::string> names;
  if (!has(group)) return names;
  auto collect = [](hid_t, const char* member, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->emplace_back(member);
    return 0;
  };
  if (H5Literate_by_name(static_cast<hid_t>(file_), group.c_str(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names,
                          H5P_DEFAULT) < 0)
    fail(path_, fmt::format("cannot list group '{}'", group));
  std::sort(names.begin(), names.end());
  return names;
}

void Hdf5File::copy_from(const Hdf5File& source, const std::string& source_name, const std::string& name) {
  ensure_parent_groups(name);
  if (H5Ocopy(static_cast<hid_t>(source.file_), source_name.c_str(), static_cast<hid_t>(file_), name.c_str(), H5P_DEFAULT,
              H5P_DEFAULT) < 0)
    fail(path_, fmt::format("cannot copy '{}' from {}", source_name, source.path().string()));
}

void Hdf5File::write_table(const std::string& name, const std::vector<TableColumn>& columns) {
  ensure_parent_groups(name);
  std::size_t rows = 0, row_bytes = 0;
  std::vector<std::size_t> offsets, widths;
  for (std::size_t c = 0; c < columns.size(); ++c) {
    const auto& column = columns[c];
    std::size_t n = 0, width = 0;
    std::visit([&](const auto& v) { n = v.size(); }, column.values);
    if (const auto* strings = std::get_if<std::vector<std::string>>(&column.values)) {
      width = column.width;
      if (width == 0)
        for (const auto& s : *strings) width = std::max(width, s.size());
      width = std::max<std::size_t>(width, 1);
    } else {
      width = 8;
    }
    if (c > 0 && n != rows) fail(path_, fmt::format("table '{}': column '{}' has {} rows, expected {}", name, column.name, n, rows));
    rows = n;
    offsets.push_back(row_bytes);
    widths.push_back(width);
    row_bytes += width;
  }
  // Packed rows in memory, the same layout in the file (little-endian numbers, as on x86-64 and ARM).
  Handle type{H5Tcreate(H5T_COMPOUND, std::max<std::size_t>(row_bytes, 1)), H5Tclose};
  // The string members' types, closed when the table is written (a Handle may not be copied).
  struct StringTypes {
    std::vector<hid_t> ids;
    ~StringTypes() {
      for (hid_t id : ids) H5Tclose(id);
    }
  } string_types;
  for (std::size_t c = 0; c < columns.size(); ++c) {
    hid_t member = H5T_NATIVE_DOUBLE;
    if (std::holds_alternative<std::vector<std::int64_t>>(columns[c].values)) member = H5T_NATIVE_INT64;
    if (std::holds_alternative<std::vector<std::string>>(columns[c].values)) {
      member = string_types.ids.emplace_back(H5Tcopy(H5T_C_S1));
      H5Tset_size(member, widths[c]);
      H5Tset_strpad(member, H5T_STR_NULLPAD);
    }
    if (H5Tinsert(type.id, columns[c].name.c_str(), offsets[c], member) < 0)
      fail(path_, fmt::format("table '{}': cannot add column '{}'", name, columns[c].name));
  }
  std::vector<unsigned char> buffer(rows * row_bytes, 0);
  for (std::size_t c = 0; c < columns.size(); ++c)
    std::visit(
        [&](const auto& v) {
          using T = typename std::decay_t<decltype(v)>::value_type;
          for (std::size_t r = 0; r < rows; ++r) {
            unsigned char* cell = buffer.data() + r * row_bytes + offsets[c];
            if constexpr (std::is_same_v<T, std::string>) {
              std::memcpy(cell, v[r].data(), std::min(v[r].size(), widths[c]));
            } else {
              std::memcpy(cell, &v[r], sizeof(T));
            }
          }
        },
        columns[c].values);
  const hsize_t dims[1] = {static_cast<hsize_t>(rows)};
  Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  Handle set{H5Dcreate2(static_cast<hid_t>(file_), name.c_str(), type.id, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  if (set.id < 0) fail(path_, fmt::format("cannot create table '{}'", name));
  if (rows > 0 && H5Dwrite(set.id, type.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()) < 0)
    fail(path_, fmt::format("cannot write table '{}'", name));
}

}  // namespace diffode
