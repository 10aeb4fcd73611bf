// JSONL and text record sources: kinds, column mapping, and an error for each kind of bad input
// that names the file, the line and the column.
#include <catch2/catch.hpp>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "data/record.hpp"
#include "temp_files.hpp"

namespace {

using lyre::open_record_source;
using lyre::Record;
using lyre::RecordKind;
using lyre::SourceOptions;
using lyre::test::TempDir;

SourceOptions jsonl(const std::string& path, std::map<std::string, std::string> mapping = {},
                    bool skip_invalid = false) {
  SourceOptions options;
  options.path = path;
  options.column_mapping = std::move(mapping);
  options.skip_invalid = skip_invalid;
  return options;
}

// The message of the std::runtime_error that opening throws ("" when it opens).
std::string open_error(const SourceOptions& options) {
  try {
    open_record_source(options);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("text records read back exactly as written, unicode and escapes included") {
  TempDir dir;
  const std::string path = dir.write(
      "train.jsonl",
      "{\"text\": \"hello\"}\n"
      "{\"text\": \"caf\\u00e9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\", \"id\": 7}\n"
      "{\"text\": \"line\\nbreak \\\"quoted\\\" tab\\t\"}\n");
  auto source = open_record_source(jsonl(path));
  REQUIRE(source->size() == 3);
  CHECK(source->kind() == RecordKind::text);
  CHECK(source->path() == path);
  CHECK(source->read(0).text == "hello");
  CHECK(source->read(1).text == "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80");
  CHECK(source->read(2).text == "line\nbreak \"quoted\" tab\t");
  CHECK(source->read(1).kind == RecordKind::text);
  CHECK(source->read(1).where == path + ":2");
  CHECK(source->stats().records == 3);
  CHECK(source->stats().bytes == static_cast<int64_t>(std::filesystem::file_size(path)));
}

TEST_CASE("each kind is detected from the first record's columns") {
  TempDir dir;
  auto kind_of = [&](const std::string& line) {
    return open_record_source(jsonl(dir.write("k.jsonl", line + "\n")))->kind();
  };
  CHECK(kind_of(R"({"text": "a"})") == RecordKind::text);
  CHECK(kind_of(R"({"prompt": "a", "completion": "b"})") == RecordKind::prompt_completion);
  CHECK(kind_of(R"({"messages": [{"role": "user", "content": "hi"}]})") == RecordKind::messages);
  CHECK(kind_of(R"({"prompt": "a", "chosen": "b", "rejected": "c"})") == RecordKind::preference);
  // The most structured kind wins; other columns are ignored.
  CHECK(kind_of(R"({"text": "a", "prompt": "p", "completion": "c"})") == RecordKind::prompt_completion);
  // Null counts as absent, as data set exports write it for a column a row lacks.
  CHECK(kind_of(R"({"text": "a", "completion": null, "messages": null})") == RecordKind::text);
  CHECK(std::string(lyre::record_kind_name(RecordKind::prompt_completion)) == "prompt_completion");
}

TEST_CASE("every field of every kind reads back") {
  TempDir dir;
  auto pc = open_record_source(jsonl(dir.write("pc.jsonl", R"({"prompt": "2+2=", "completion": "4"})")));
  Record r = pc->read(0);
  CHECK(r.kind == RecordKind::prompt_completion);
  CHECK(r.prompt == "2+2=");
  CHECK(r.completion == "4");

  auto pref = open_record_source(
      jsonl(dir.write("pref.jsonl", R"({"prompt": "p", "chosen": "good", "rejected": "bad"})")));
  r = pref->read(0);
  CHECK(r.kind == RecordKind::preference);
  CHECK(r.prompt == "p");
  CHECK(r.chosen == "good");
  CHECK(r.rejected == "bad");

  auto chat = open_record_source(jsonl(dir.write(
      "chat.jsonl",
      R"({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})")));
  r = chat->read(0);
  CHECK(r.kind == RecordKind::messages);
  REQUIRE(r.messages.size() == 3);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[0].content == "be brief");
  CHECK(r.messages[1].role == "user");
  CHECK(r.messages[2].role == "assistant");
  CHECK(r.messages[2].content == "hello");
}

TEST_CASE("column_mapping reads columns under other names") {
  TempDir dir;
  const std::string path = dir.write("qa.jsonl", "{\"question\": \"q1\", \"answer\": \"a1\", \"prompt\": \"ignored\"}\n"
                                                 "{\"question\": \"q2\", \"answer\": \"a2\"}\n");
  auto source = open_record_source(jsonl(path, {{"prompt", "question"}, {"completion", "answer"}}));
  REQUIRE(source->size() == 2);
  CHECK(source->kind() == RecordKind::prompt_completion);
  CHECK(source->read(0).prompt == "q1");
  CHECK(source->read(1).completion == "a2");

  auto text = open_record_source(jsonl(dir.write("t.jsonl", R"({"content": "body", "text": 3})"), {{"text", "content"}}));
  CHECK(text->read(0).text == "body");
}

TEST_CASE("a ShareGPT mapping reads human and gpt turns as user and assistant") {
  TempDir dir;
  const std::string path = dir.write(
      "sharegpt.jsonl",
      R"({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "tool", "value": "t"}]})");
  auto source = open_record_source(
      jsonl(path, {{"messages", "conversations"}, {"role", "from"}, {"content", "value"}}));
  CHECK(source->kind() == RecordKind::messages);
  const Record r = source->read(0);
  REQUIRE(r.messages.size() == 4);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[1].role == "user");
  CHECK(r.messages[1].content == "q");
  CHECK(r.messages[2].role == "assistant");
  CHECK(r.messages[2].content == "a");
  CHECK(r.messages[3].role == "tool");  // roles it does not know are kept for the template
}

TEST_CASE("roles are kept as written without the ShareGPT mapping") {
  TempDir dir;
  auto source = open_record_source(
      jsonl(dir.write("m.jsonl", R"({"messages": [{"role": "human", "content": "q"}]})")));
  CHECK(source->read(0).messages[0].role == "human");
}

TEST_CASE("a missing mapped column names the column, the field it maps and the line") {
  TempDir dir;
  std::string contents;
  for (int i = 0; i < 16; ++i) contents += R"({"question": "q", "answer": "a"})" "\n";
  contents += R"({"question": "q", "response": "a"})" "\n";
  const std::string path = dir.write("train.jsonl", contents);
  CHECK(open_error(jsonl(path, {{"prompt", "question"}, {"completion", "answer"}})) ==
        path + ":17: missing column \"answer\" (mapped from \"completion\" by column_mapping)");
}

TEST_CASE("a missing column without a mapping names the column and the line") {
  TempDir dir;
  const std::string path = dir.write("pc.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n");
  CHECK(open_error(jsonl(path)) == path + ":2: missing column \"completion\"");
  const std::string only_prompt = dir.write("p.jsonl", "{\"prompt\": \"a\"}\n");
  CHECK(open_error(jsonl(only_prompt)) == only_prompt + ":1: missing column \"completion\"");
  const std::string pref = dir.write("pref.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\"}\n");
  CHECK(open_error(jsonl(pref)) == pref + ":1: missing column \"rejected\"");
}

TEST_CASE("a line with no column of a known kind lists what it has") {
  TempDir dir;
  const std::string path = dir.write("x.jsonl", "{\"question\": \"a\", \"id\": 3}\n");
  CHECK(open_error(jsonl(path)) ==
        path + ":1: no column of a known record kind: expected \"text\", \"prompt\" with \"completion\", "
               "\"messages\", or \"prompt\" with \"chosen\" and \"rejected\"; the line has \"question\", \"id\"");
}

TEST_CASE("malformed JSON names the file, the line and simdjson's reason") {
  TempDir dir;
  const std::string path = dir.write("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n");
  CHECK(open_error(jsonl(path)) ==
        path + ":2: malformed JSON: The JSON document has an improper structure: missing or superfluous "
               "commas, braces, missing keys, etc.");
  const std::string trailing = dir.write("trailing.jsonl", "{\"text\": \"a\"} {\"text\": \"b\"}\n");
  CHECK_THAT(open_error(jsonl(trailing)), Catch::StartsWith(trailing + ":1: malformed JSON: "));
}

TEST_CASE("a value of the wrong type names the column and the type it has") {
  TempDir dir;
  const std::string number = dir.write("n.jsonl", "{\"text\": 5}\n");
  CHECK(open_error(jsonl(number)) == number + ":1: column \"text\" must be a string, got number");
  const std::string null_prompt = dir.write("np.jsonl", "{\"prompt\": null, \"completion\": \"c\"}\n");
  CHECK(open_error(jsonl(null_prompt)) == null_prompt + ":1: column \"prompt\" must be a string, got null");
  const std::string mapped = dir.write("m.jsonl", "{\"q\": [\"a\"], \"completion\": \"c\"}\n");
  CHECK(open_error(jsonl(mapped, {{"prompt", "q"}})) ==
        mapped + ":1: column \"q\" (mapped from \"prompt\" by column_mapping) must be a string, got array");
}

TEST_CASE("malformed messages name the turn and the key") {
  TempDir dir;
  auto error_for = [&](const std::string& line) { return open_error(jsonl(dir.write("m.jsonl", line))); };
  const std::string path = dir.path("m.jsonl");
  CHECK(error_for(R"({"messages": "hi"})") == path + ":1: column \"messages\" must be an array of objects, got string");
  CHECK(error_for(R"({"messages": []})") == path + ":1: column \"messages\" is an empty array");
  CHECK(error_for(R"({"messages": [{"role": "user", "content": "a"}, 3]})") ==
        path + ":1: messages[1] must be an object, got number");
  CHECK(error_for(R"({"messages": [{"content": "a"}]})") == path + ":1: messages[0] has no key \"role\"");
  CHECK(error_for(R"({"messages": [{"role": "user", "content": null}]})") ==
        path + ":1: messages[0].content must be a string, got null");
  const std::string sharegpt = dir.write("s.jsonl", R"({"conversations": [{"from": "human"}]})");
  CHECK(open_error(jsonl(sharegpt, {{"messages", "conversations"}, {"role", "from"}, {"content", "value"}})) ==
        sharegpt + ":1: conversations[0] has no key \"value\" (mapped from \"content\" by column_mapping)");
}

TEST_CASE("a line that is not an object names the type it is") {
  TempDir dir;
  const std::string path = dir.write("a.jsonl", "{\"text\": \"a\"}\n[1, 2]\n");
  CHECK(open_error(jsonl(path)) == path + ":2: expected a JSON object, got array");
  const std::string scalar = dir.write("s.jsonl", "\"just a string\"\n");
  CHECK(open_error(jsonl(scalar)) == scalar + ":1: expected a JSON object, got string");
}

TEST_CASE("a record of another kind than the first names the line and both kinds, even when skipping") {
  TempDir dir;
  const std::string path = dir.write("mixed.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}\n\n{\"text\": \"t\"}\n");
  const std::string expected = path + ":3: a text record (it has column \"text\"), but the first record (line 1) is "
                                      "prompt_completion; a file holds one kind of record";
  CHECK(open_error(jsonl(path)) == expected);
  CHECK(open_error(jsonl(path, {}, true)) == expected);
}

TEST_CASE("skip_invalid skips and counts broken lines and keeps the line numbers of the rest") {
  TempDir dir;
  const std::string path = dir.write("skip.jsonl",
                                     "{\"text\": \"a\"}\n"  // 1
                                     "{oops\n"              // 2 malformed
                                     "\n"                   // 3 blank
                                     "{\"text\": 1}\n"      // 4 wrong type
                                     "{\"text\": \"b\"}\n"  // 5
                                     "[]\n"                 // 6 not an object
                                     "{\"text\": \"c\"}\n"  // 7
                                     "{\"other\": 1}\n");   // 8 missing column
  CHECK_THAT(open_error(jsonl(path)), Catch::StartsWith(path + ":2: malformed JSON: "));
  auto source = open_record_source(jsonl(path, {}, true));
  REQUIRE(source->size() == 3);
  CHECK(source->stats().records == 3);
  CHECK(source->stats().skipped == 4);
  CHECK(source->stats().blank == 1);
  CHECK(source->read(0).where == path + ":1");
  CHECK(source->read(1).text == "b");
  CHECK(source->read(1).where == path + ":5");
  CHECK(source->read(2).text == "c");
  CHECK(source->read(2).where == path + ":7");
}

TEST_CASE("a file of nothing but invalid lines is an error even when skipping, quoting the first") {
  TempDir dir;
  const std::string path = dir.write("bad.jsonl", "\n{\"text\": 1}\nnope\n");
  CHECK(open_error(jsonl(path, {}, true)) ==
        path + ": no usable records: all 2 non-blank line(s) are invalid; the first: " + path +
            ":2: column \"text\" must be a string, got number");
}

TEST_CASE("blank lines are ignored but still count for line numbers") {
  TempDir dir;
  const std::string path = dir.write("blank.jsonl", "\n   \n{\"text\": \"a\"}\n\t\n\n{\"text\": \"b\"}\n\n");
  auto source = open_record_source(jsonl(path));
  REQUIRE(source->size() == 2);
  CHECK(source->stats().blank == 5);
  CHECK(source->read(0).where == path + ":3");
  CHECK(source->read(1).where == path + ":6");
  CHECK(source->read(1).text == "b");
}

TEST_CASE("CRLF line endings, a missing final newline and a byte-order mark are fine") {
  TempDir dir;
  const std::string crlf = dir.write("crlf.jsonl", "{\"text\": \"a\"}\r\n\r\n{\"text\": \"b\"}\r\n");
  auto source = open_record_source(jsonl(crlf));
  REQUIRE(source->size() == 2);
  CHECK(source->read(0).text == "a");
  CHECK(source->read(1).text == "b");
  CHECK(source->read(1).where == crlf + ":3");

  const std::string no_newline = dir.write("nonl.jsonl", "{\"text\": \"a\"}\n{\"text\": \"last\"}");
  source = open_record_source(jsonl(no_newline));
  REQUIRE(source->size() == 2);
  CHECK(source->read(1).text == "last");

  const std::string bom = dir.write("bom.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\n");
  CHECK(open_record_source(jsonl(bom))->read(0).text == "a");
}

TEST_CASE("an empty file or one of blank lines is an error naming it") {
  TempDir dir;
  const std::string empty = dir.write("empty.jsonl", "");
  CHECK(open_error(jsonl(empty)) == empty + ": no records: the file is empty");
  const std::string blank = dir.write("blank.jsonl", "\n  \r\n\n");
  CHECK(open_error(jsonl(blank)) == blank + ": no records: the file has only blank lines");
  CHECK(open_error(jsonl(dir.path("missing.jsonl"))) == dir.path("missing.jsonl") + ": no such file or directory");
}

TEST_CASE("invalid UTF-8 names the line and the column of the bad byte") {
  TempDir dir;
  const std::string path = dir.write("latin1.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"caf\xE9\"}\n");
  CHECK(open_error(jsonl(path)) == path + ":2: invalid UTF-8 at column 14 (byte 0xe9); lyre reads JSONL as UTF-8");
  auto source = open_record_source(jsonl(path, {}, true));
  CHECK(source->size() == 1);
  CHECK(source->stats().skipped == 1);
  // An encoded surrogate is not UTF-8 either.
  const std::string surrogate = dir.write("sur.jsonl", "{\"text\": \"\xED\xA0\x80\"}\n");
  CHECK(open_error(jsonl(surrogate)) == surrogate + ":1: invalid UTF-8 at column 11 (byte 0xed); lyre reads JSONL as UTF-8");
}

TEST_CASE("a NUL byte in a line is malformed JSON, not a crash") {
  TempDir dir;
  const std::string in_string = dir.write("nul.jsonl", std::string("{\"text\": \"a\0b\"}\n", 16));
  CHECK(open_error(jsonl(in_string)) ==
        in_string + ":1: malformed JSON: Within strings, some characters must be escaped, we found unescaped characters");
  const std::string outside = dir.write("nul2.jsonl", std::string("{\"text\": \"a\"}\0\n", 15));
  CHECK_THAT(open_error(jsonl(outside)), Catch::StartsWith(outside + ":1: malformed JSON: "));
  // Escaped, it is an ordinary character.
  auto source = open_record_source(jsonl(dir.write("esc.jsonl", "{\"text\": \"a\\u0000b\"}\n")));
  CHECK(source->read(0).text == std::string("a\0b", 3));
}

TEST_CASE("a 100 MB line opens and reads back") {
  TempDir dir;
  const std::string big(100u << 20, 'x');
  const std::string path = dir.write("big.jsonl", "{\"text\": \"a\"}\n{\"text\": \"" + big + "\"}\n{\"text\": \"z\"}\n");
  auto source = open_record_source(jsonl(path));
  REQUIRE(source->size() == 3);
  CHECK(source->read(1).text == big);
  CHECK(source->read(2).text == "z");
  // And broken, it is an error like any other.
  const std::string broken = dir.write("broken.jsonl", "{\"text\": \"" + big + "\n");
  CHECK_THAT(open_error(jsonl(broken)), Catch::StartsWith(broken + ":1: malformed JSON: "));
}

TEST_CASE("a column_mapping key that is not a field lyre knows is an error naming it") {
  TempDir dir;
  const std::string path = dir.write("t.jsonl", "{\"text\": \"a\"}\n");
  CHECK(open_error(jsonl(path, {{"answer", "completion"}})) ==
        path + ": column_mapping: unknown field \"answer\"; the fields are text, prompt, completion, messages, "
               "chosen, rejected, role, content (field -> column in the file)");
  CHECK(open_error(jsonl(path, {{"text", ""}})) == path + ": column_mapping: field \"text\" maps to an empty column name");
}

TEST_CASE("a 200k-line file opens to offsets only and reads any record back") {
  TempDir dir;
  std::string contents;
  constexpr int kLines = 200000;
  for (int i = 0; i < kLines; ++i)
    contents += "{\"prompt\": \"question " + std::to_string(i) + "\", \"completion\": \"answer " + std::to_string(i) + "\"}\n";
  const std::string path = dir.write("many.jsonl", contents);
  auto source = open_record_source(jsonl(path));
  REQUIRE(source->size() == kLines);
  CHECK(source->stats().bytes == static_cast<int64_t>(contents.size()));
  for (int i : {0, 1, 123456, kLines - 1}) {
    const Record r = source->read(i);
    CHECK(r.prompt == "question " + std::to_string(i));
    CHECK(r.completion == "answer " + std::to_string(i));
    CHECK(r.where == path + ":" + std::to_string(i + 1));
  }
  CHECK_THROWS_AS(source->read(kLines), std::out_of_range);
  CHECK_THROWS_AS(source->read(-1), std::out_of_range);
}

TEST_CASE("read gives the same records from several threads at once") {
  TempDir dir;
  std::string contents;
  constexpr int kLines = 2000;
  for (int i = 0; i < kLines; ++i) contents += "{\"text\": \"record " + std::to_string(i) + "\"}\n";
  auto source = open_record_source(jsonl(dir.write("threads.jsonl", contents)));
  std::vector<int> wrong(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kLines; ++i)
        if (source->read((i * 7 + t) % kLines).text != "record " + std::to_string((i * 7 + t) % kLines)) ++wrong[t];
    });
  for (auto& thread : threads) thread.join();
  CHECK(wrong == std::vector<int>(4, 0));
}

TEST_CASE("a JSONL buffer in memory reads like the same file") {
  SourceOptions options;
  auto source = lyre::open_jsonl_buffer("{\"text\": \"a\"}\n\n{\"text\": \"b\"}", "memory", options);
  REQUIRE(source->size() == 2);
  CHECK(source->read(1).text == "b");
  CHECK(source->read(1).where == "memory:3");
  try {
    lyre::open_jsonl_buffer("{\"text\": 1}\n", "memory", options);
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "memory:1: column \"text\" must be a string, got number");
  }
}

TEST_CASE("a text file is one text record holding the whole file") {
  TempDir dir;
  const std::string contents = "# Title\r\n\nSome text, \xE6\x97\xA5\xE6\x9C\xAC.\n{\"not\": \"json\"}\n";
  const std::string path = dir.write("notes.md", contents);
  SourceOptions options;
  options.path = path;
  auto source = open_record_source(options);
  REQUIRE(source->size() == 1);
  CHECK(source->kind() == RecordKind::text);
  CHECK(source->read(0).text == contents);
  CHECK(source->read(0).where == path);
  CHECK(source->stats().bytes == static_cast<int64_t>(contents.size()));
  // format "text" overrides the extension.
  options.path = dir.write("data.jsonl", "{oops");
  options.format = "text";
  CHECK(open_record_source(options)->read(0).text == "{oops");
}

TEST_CASE("a directory gives one record per .txt/.md file in name order") {
  TempDir dir;
  dir.write("b.txt", "bee");
  dir.write("a.md", "ay");
  dir.write("c.TXT", "sea");
  dir.write("empty.txt", "");
  dir.write("skip.json", "{}");
  dir.write("README", "not text by name");
  std::filesystem::create_directory(dir.path("sub"));
  dir.write("sub/d.txt", "not read: subfolders are not searched");
  SourceOptions options;
  options.path = dir.path("");
  auto source = open_record_source(options);
  REQUIRE(source->size() == 3);
  CHECK(source->read(0).text == "ay");
  CHECK(source->read(1).text == "bee");
  CHECK(source->read(2).text == "sea");
  CHECK(source->stats().blank == 1);
}

TEST_CASE("text input errors name the file") {
  TempDir dir;
  std::filesystem::create_directory(dir.path("empty"));
  dir.write("empty/data.json", "{}");
  SourceOptions options;
  options.path = dir.path("empty");
  CHECK(open_error(options) == options.path + ": no .txt or .md files in the directory");

  options.path = dir.write("empty.txt", "");
  CHECK(open_error(options) == options.path + ": no records: the file is empty");

  options.path = dir.write("latin1.txt", "first line\ncaf\xE9\n");
  CHECK(open_error(options) == options.path + ":2: invalid UTF-8 at column 4 (byte 0xe9); lyre reads text files as UTF-8");

  options.path = dir.path("empty");
  options.format = "jsonl";
  CHECK(open_error(options) == options.path + ": is a directory; format \"jsonl\" reads one file");
  options.format = "auto";

  options.path = dir.write("data.csv", "a,b\n");
  CHECK(open_error(options) ==
        options.path + ": cannot tell the format from the extension \".csv\"; set format to \"jsonl\" or \"text\"");
  options.format = "parquet";
  CHECK(open_error(options) == options.path + ": unknown format \"parquet\"; use \"jsonl\", \"text\" or \"auto\"");

  options.path = dir.write("ok.txt", "text");
  options.format = "auto";
  options.column_mapping = {{"text", "body"}};
  CHECK(open_error(options) ==
        options.path + ": column_mapping applies to JSONL only; a text file is one \"text\" record");
}
