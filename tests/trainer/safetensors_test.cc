// tests/trainer/safetensors_test.cc: safetensors round trips, the reference byte layout, and
// one crafted file per rejection rule of the hardened parser.
#include "trainer/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "gtest/gtest.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "st_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A file with header `json`, header length `n` (default: json's size) and `buffer` bytes.
  std::string Craft(const std::string& json, size_t buffer, std::optional<uint64_t> n = {}) {
    std::string path = (fs::path(dir_) / ("f" + std::to_string(count_++))).string();
    std::ofstream f(path, std::ios::binary);
    uint64_t len = n.value_or(json.size());
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << json << std::string(buffer, '\x01');
    return path;
  }

  // Opens a crafted file and expects a rejection mentioning the file and `needle`.
  void ExpectRejected(const std::string& json, size_t buffer, const std::string& needle,
                      std::optional<uint64_t> n = {}) {
    std::string path = Craft(json, buffer, n);
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << json;
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status();
  }

  std::string dir_;
  int count_ = 0;
};

Tensor Patterned(std::vector<int64_t> shape, DType dtype, int seed) {
  Tensor t(std::move(shape), dtype);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(i * 31 + seed * 7 + 1);
  return t;
}

TEST_F(SafetensorsTest, RoundTripsEveryDTypeAndShape) {
  const DType dtypes[] = {DType::kF32,    DType::kF64,    DType::kBF16, DType::kF16,
                          DType::kF8E4M3, DType::kF8E5M2, DType::kI8,   DType::kU8,
                          DType::kI16,    DType::kU16,    DType::kI32,  DType::kI64};
  const std::vector<std::vector<int64_t>> shapes = {{3, 5}, {}, {0}, {2, 0, 3}, {7}};
  std::vector<NamedTensor> tensors;
  int seed = 0;
  for (DType d : dtypes) {
    for (const auto& s : shapes) {
      tensors.push_back(
          {std::string(DTypeName(d)) + "/" + ShapeString(s), Patterned(s, d, ++seed)});
    }
  }
  const std::string path = (fs::path(dir_) / "all.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"step", "42"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->names().size(), tensors.size());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("step"), "42");
  for (const NamedTensor& t : tensors) {
    auto info = f->Info(t.name);
    ASSERT_TRUE(info.ok()) << t.name;
    EXPECT_EQ(info->dtype, t.tensor.dtype());
    EXPECT_EQ(info->shape, t.tensor.shape());
    auto back = f->Read(t.name);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->dtype(), t.tensor.dtype());
    EXPECT_EQ(back->shape(), t.tensor.shape());
    ASSERT_EQ(back->nbytes(), t.tensor.nbytes());
    EXPECT_EQ(std::memcmp(back->raw(), t.tensor.raw(), t.tensor.nbytes()), 0) << t.name;
  }
  EXPECT_FALSE(f->Read("missing").ok());
}

TEST_F(SafetensorsTest, HeaderLayoutMatchesTheReferenceWriter) {
  std::vector<NamedTensor> tensors = {{"b", Patterned({2}, DType::kF32, 1)},
                                      {"a", Patterned({3}, DType::kBF16, 2)},
                                      {"e", Patterned({5}, DType::kU8, 3)},
                                      {"c", Patterned({1}, DType::kF32, 4)},
                                      {"z", Patterned({1}, DType::kI64, 5)}};
  const std::string path = (fs::path(dir_) / "layout.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  // __metadata__ first; then descending alignment (I64, F32, BF16, U8), names ascending.
  const std::string json =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"z\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]},"
      "\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[20,26]},"
      "\"e\":{\"dtype\":\"U8\",\"shape\":[5],\"data_offsets\":[26,31]}}";
  ASSERT_EQ(n, (json.size() + 7) / 8 * 8);
  EXPECT_EQ(bytes.substr(8, json.size()), json);
  EXPECT_EQ(bytes.substr(8 + json.size(), n - json.size()), std::string(n - json.size(), ' '));
  ASSERT_EQ(bytes.size(), 8 + n + 31);
  // Data follows in the same order.
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, tensors[4].tensor.raw(), 8), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + 8, tensors[0].tensor.raw(), 8), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + 26, tensors[2].tensor.raw(), 5), 0);
}

TEST_F(SafetensorsTest, WriterRejectsDuplicateAndReservedNames) {
  const std::string path = (fs::path(dir_) / "dup.safetensors").string();
  EXPECT_FALSE(WriteSafetensors(path, {{"a", Tensor({1})}, {"a", Tensor({2})}}).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"__metadata__", Tensor({1})}}).ok());
}

TEST_F(SafetensorsTest, AcceptsEdgeCasesTheFormatAllows) {
  // Empty header and buffer; leading whitespace; zero-byte tensors sharing an offset.
  EXPECT_TRUE(SafetensorsFile::Open(Craft("{}      ", 0)).ok());
  EXPECT_TRUE(SafetensorsFile::Open(Craft(" \n{}", 0)).ok());
  auto f =
      SafetensorsFile::Open(Craft(R"({"e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                  R"("x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                  R"("e2":{"dtype":"I64","shape":[2,0],"data_offsets":[4,4]}})",
                                  4));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->names(), (std::vector<std::string>{"x", "e1", "e2"}));
}

constexpr char kOk[] = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

TEST_F(SafetensorsTest, RejectsTooShortFile) {
  std::string path = (fs::path(dir_) / "short").string();
  std::ofstream(path) << "abc";
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("too short"), std::string::npos) << f.status();
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastTheFile) {
  ExpectRejected(std::string("{") + kOk + "}", 8, "runs past the end of the file", 1000);
}

TEST_F(SafetensorsTest, RejectsHeaderLengthOverTheCap) {
  ExpectRejected("{}", 0, "exceeds the limit", kSafetensorsMaxHeaderBytes + 1);
  ExpectRejected("{}", 0, "exceeds the limit", ~uint64_t{0});  // 8 + N would wrap
}

TEST_F(SafetensorsTest, RejectsInvalidJson) {
  ExpectRejected(R"({"t":{"dtype":"F32",)", 0, "not valid JSON");
  ExpectRejected("{} x", 0, "not valid JSON");
  ExpectRejected("{\"\xff\":1}", 0, "not valid JSON");  // not UTF-8
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  ExpectRejected("[1, 2]  ", 0, "not a JSON object");
}

TEST_F(SafetensorsTest, RejectsUnknownDType) {
  ExpectRejected(R"({"t":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", 8,
                 "tensor \"t\": unknown or unsupported dtype \"F7\"");
}

TEST_F(SafetensorsTest, RejectsNegativeOrNonIntegerShapes) {
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8,
                 "shape[0] = -2 is not a non-negative integer");
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
                 "is not a non-negative integer");
  ExpectRejected(R"({"t":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8,
                 "is not a non-negative integer");
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}})", 8,
                 "entry \"t\": JSON nested deeper");
  ExpectRejected(R"({"t":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
                 "entry \"t\": duplicate key \"dtype\"");
  ExpectRejected(R"({"t":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8,
                 "missing array field \"shape\"");
}

TEST_F(SafetensorsTest, RejectsOffsetsOutOfBounds) {
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[25],"data_offsets":[0,100]}})", 8,
                 "tensor \"t\": data_offsets [0, 100] are out of bounds");
}

TEST_F(SafetensorsTest, RejectsMalformedOffsets) {
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, "data_offsets");
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", 8,
                 "not non-negative integers");
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[2]}})", 8, "tensor \"t\": missing field");
}

TEST_F(SafetensorsTest, RejectsUnorderedRange) {
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8,
                 "tensor \"t\": data_offsets [8, 0] are unordered");
}

TEST_F(SafetensorsTest, RejectsOverlappingRanges) {
  ExpectRejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 12, "tensor \"b\" at [4, 12) overlaps tensor \"a\"");
  // The same range twice is an overlap too.
  ExpectRejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                 8, "overlaps");
}

TEST_F(SafetensorsTest, RejectsHoles) {
  ExpectRejected(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                 12, "hole: bytes [4, 8)");
  ExpectRejected(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
                 "hole: bytes [0, 4)");
}

TEST_F(SafetensorsTest, RejectsBufferNotEndingAtEndOfFile) {
  ExpectRejected(std::string("{") + kOk + "}", 12, "4 trailing bytes belong to no tensor");
}

TEST_F(SafetensorsTest, RejectsShapeThatDisagreesWithRange) {
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
                 "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8");
}

TEST_F(SafetensorsTest, RejectsShapeWhoseByteSizeOverflows) {
  ExpectRejected(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
                 "overflows");
  ExpectRejected(R"({"t":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
                 "overflows");
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  ExpectRejected(std::string("{") + kOk + "," + kOk + "}", 8, "duplicate tensor name \"t\"");
}

TEST_F(SafetensorsTest, RejectsBadMetadata) {
  ExpectRejected(R"({"__metadata__":{"format":1}})", 0,
                 "\"__metadata__\" value for \"format\" is not a string");
  ExpectRejected(R"({"__metadata__":"pt"})", 0, "\"__metadata__\" is not a JSON object");
}

TEST_F(SafetensorsTest, ParserEntryPointTakesAWholeBuffer) {
  std::string json = std::string("{") + kOk + "}";
  uint64_t n = json.size();
  std::string file(reinterpret_cast<const char*>(&n), 8);
  file += json + std::string(8, '\0');
  auto h = ParseSafetensorsHeader(file, file.size());
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_start, 8 + n);
  EXPECT_EQ(h->tensors.at("t").end, 8u);
  // A caller that gives fewer bytes than the header claims gets an error, not a read past.
  EXPECT_FALSE(ParseSafetensorsHeader(std::string_view(file).substr(0, 20), file.size()).ok());
}

TEST_F(SafetensorsTest, RejectsNonRegularFilesWithoutBlocking) {
  const std::string fifo = (fs::path(dir_) / "fifo.safetensors").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto f = SafetensorsFile::Open(fifo);  // a blocking open would hang here
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("not a regular file"), std::string::npos) << f.status();
  EXPECT_FALSE(SafetensorsFile::Open(dir_).ok());
}

TEST_F(SafetensorsTest, FileTruncatedAfterOpenIsAnErrorNotACrash) {
  const std::string path = (fs::path(dir_) / "trunc.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, {{"w", Patterned({1024}, DType::kF32, 1)}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  fs::resize_file(path, fs::file_size(path) - 100);
  auto t = f->Read("w");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("unexpected end of file"), std::string::npos);
}

}  // namespace
}  // namespace mt
