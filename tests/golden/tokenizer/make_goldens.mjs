// Makes the WordPiece tokenizer goldens of edgetune from an independent reference.
//
// What it is: the one script that writes every file in tests/golden/tokenizer except package.json
// and the lock file, and data/src/bert_unicode_tables.inc (the character classes of the reference).
// The source of truth is Hugging Face `tokenizers` (Rust, the engine of BertTokenizerFast), reached
// through the prebuilt Node binding `@anush008/tokenizers`; transformers.js
// (`@huggingface/transformers`, an independent JavaScript port) is run on the same inputs as a
// cross-check and its disagreements are written to reference_agreement.json.
// What it is not: a test. The C++ tests read the files it writes; they never need Node.
//
// Needs: the shared data folder (vocabularies and real data sets; default ../../../../shared/data,
// or $EDGETUNE_SHARED_DATA). Nothing from there is written into the repository except token ids,
// line numbers and a pruned vocabulary list of a few hundred tokens.
//
// Run:  cd tests/golden/tokenizer && npm install --ignore-scripts && node make_goldens.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@anush008/tokenizers";
import { BertTokenizer } from "@huggingface/transformers";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");
const shared = process.env.EDGETUNE_SHARED_DATA ?? path.resolve(repo, "../shared/data");
const REFERENCE = "Hugging Face tokenizers 0.22.2 (Rust) via @anush008/tokenizers 0.6.0";
const FORMAT_VERSION = 1;

// ---------------------------------------------------------------- tokenizer.json from vocab.txt

function readVocab(file) {
  const text = fs.readFileSync(file, "utf8");
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines.map((l) => l.replace(/\s+$/u, ""));
}

const SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

// The tokenizer.json that BertTokenizerFast saves for a BERT vocabulary.
function tokenizerJson(tokens, lowercase, stripAccents = null) {
  const vocab = {};
  tokens.forEach((t, i) => (vocab[t] = i)); // a duplicate line: the last one wins, as in HF
  const id = (t) => {
    if (!(t in vocab)) throw new Error(`vocabulary has no ${t}`);
    return vocab[t];
  };
  const special = (t, type_id) => ({ SpecialToken: { id: t, type_id } });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((t) => ({
      id: id(t), content: t, single_word: false, lstrip: false, rstrip: false,
      normalized: false, special: true,
    })),
    normalizer: {
      type: "BertNormalizer", clean_text: true, handle_chinese_chars: true,
      strip_accents: stripAccents, lowercase,
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [special("[CLS]", 0), { Sequence: { id: "A", type_id: 0 } }, special("[SEP]", 0)],
      pair: [
        special("[CLS]", 0), { Sequence: { id: "A", type_id: 0 } }, special("[SEP]", 0),
        { Sequence: { id: "B", type_id: 1 } }, special("[SEP]", 1),
      ],
      special_tokens: {
        "[CLS]": { id: "[CLS]", ids: [id("[CLS]")], tokens: ["[CLS]"] },
        "[SEP]": { id: "[SEP]", ids: [id("[SEP]")], tokens: ["[SEP]"] },
      },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##",
      max_input_chars_per_word: 100, vocab,
    },
  };
}

class References {
  constructor(tokens, lowercase, stripAccents = null) {
    const json = tokenizerJson(tokens, lowercase, stripAccents);
    this.rust = Tokenizer.fromString(JSON.stringify(json));
    this.js = new BertTokenizer(json, {
      do_lower_case: lowercase, strip_accents: stripAccents, model_max_length: 1 << 30,
      clean_up_tokenization_spaces: true,
    });
    this.tokens = tokens;
  }
  // HF truncation with strategy longest_first; max_length counts the special tokens.
  async rustEncode(a, b, maxLength) {
    if (maxLength === undefined) this.rust.disableTruncation();
    else this.rust.setTruncation(maxLength, { strategy: "LongestFirst" });
    const e = await this.rust.encode(a, b ?? null);
    return { ids: e.getIds(), type_ids: e.getTypeIds(), attention_mask: e.getAttentionMask(),
             tokens: e.getTokens() };
  }
  // transformers.js truncates by cutting the tail (special tokens included), unlike HF, so it is
  // only asked for untruncated encodings.
  jsEncode(a, b) {
    const e = this.js._encode_plus(a, { text_pair: b ?? null });
    return { ids: e.input_ids, type_ids: e.token_type_ids };
  }
}

// ------------------------------------------------------------------------------- hand cases

const hex = (bytes) => Buffer.from(bytes).toString("hex");
// Bytes (possibly invalid UTF-8) -> the string Python's decode(errors='replace') gives; the
// WHATWG decoder replaces each maximal ill-formed subpart by one U+FFFD, as Python does.
const decodeReplace = (bytes) => new TextDecoder("utf-8", { fatal: false }).decode(Buffer.from(bytes));
function isValidUtf8(bytes) {
  try { new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(bytes)); return true; }
  catch { return false; }
}
const countFffd = (s) => [...s].filter((c) => c === "\uFFFD").length;

const B = (...xs) => ({ bytes: xs.flatMap((x) => (typeof x === "string" ? [...Buffer.from(x, "utf8")] : x)) });
const long = (n, unit = "a") => unit.repeat(n);

// Cases run with both vocabularies. {a, b, max_length}; a or b may be B(...) bytes.
const CASES = [
  { a: "" },
  { a: " " },
  { a: "\t\n\r  \u3000" },
  { a: "", b: "" },
  { a: "hello", b: "" },
  { a: "Hello, world!" },
  { a: "HELLO World hElLo" },
  { a: "The quick brown fox jumps over the lazy dog." },
  { a: "unaffable unbelievably running jumped" },
  { a: "don't won't it's y'all rock'n'roll" },
  { a: "e-mail: someone@example.com, http://www.example.org/path?q=1&r=2#frag" },
  { a: "$100.00 + 5% = ~€105 (approx.) <tag> {brace} [bracket] `tick` ^caret |pipe| \\back\\" },
  { a: "!!!???...---***///:::;;;" },
  { a: "...hello...world..." },
  { a: "a.b,c;d:e!f?g" },
  { a: "naïve café résumé façade coöperate Ångström" },
  { a: "NAÏVE CAFÉ RÉSUMÉ" },
  { a: "Crème brûlée à la française" },
  { a: "e\u0301 combining acute, n\u0303 combining tilde, a\u0308\u0304 stacked" },
  { a: "\u0301\u0301 leading marks" },
  { a: "İstanbul İ ı I i DİYARBAKIR" },
  { a: "İ" },
  { a: "ΣΑΣ Σ ΑΣ. ΌΣΟΣ" },
  { a: "Straße STRASSE ß ẞ groß" },
  { a: "ΟΔΟΣ Σίσυφος ΣΟΦΟΣ σοφός ς" },
  { a: "Ǆemal ǅ ǆ ﬁ ﬂ ﬀ" },
  { a: "ＡＢＣ ａｂｃ １２３ ！？（）" },
  { a: "全角：ＨＥＬＬＯ，世界！" },
  { a: "我爱北京天安门。" },
  { a: "今天天气很好，我们去公园玩吧！" },
  { a: "中文English混合mixed文本text" },
  { a: "𠀀𠀁 CJK extension B 𪜀 𫝀 𫠠 𬺰 丽 兀" },
  { a: "日本語のテキスト、カタカナとひらがな。" },
  { a: "한국어 텍스트입니다" },
  { a: "Русский текст, Ёлка ЁЖ" },
  { a: "العربية نص عربي" },
  { a: "עברית טקסט" },
  { a: "हिन्दी पाठ" },
  { a: "ไทยภาษา" },
  { a: "emoji 😀👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 🥰 🤣" },
  { a: "zero\u200Bwidth\u200Cnon\u200Djoiner\u2060word\uFEFFbom" },
  { a: "soft\u00ADhyphen and\u00A0nbsp and\u2009thin\u202Fnarrow" },
  { a: "line\u2028sep\u2029para\u0085nel" },
  { a: "ctrl\u0001\u0002\u0007\u001B[0m\u007F\u0080\u009Fchars" },
  { a: "tab\tnew\nline\r\nwindows\u000Bvt\u000Cff" },
  { a: "nul\u0000inside\u0000" },
  { a: "replacement \uFFFD char \uFFFD\uFFFD" },
  { a: "private \uE000\uF8FF use \u{F0000}" },
  { a: "unassigned \u0378 \u{E0001}tag \u{E0041}" },
  { a: "bidi \u202Aembed\u202C \u200Fmark \u061C arabic" },
  { a: "new punctuation ⹃ ⹏ ⸮ ‽ ⁇ ‼ ¡ ¿ « » „ “ ” ‘ ’ ‹ ›" },
  { a: "math symbols ± × ÷ ∑ ∫ √ ≤ ≥ ≠ ° ™ © ®" },
  { a: "currency £ ¥ ₹ ₩ ₽ ¢" },
  { a: "superscripts x² H₂O ½ ¼ Ⅻ ⅷ" },
  { a: long(100) },
  { a: long(101) },
  { a: long(103) },
  { a: long(104) },
  { a: long(99) + "é" },
  { a: long(100) + "é" },
  { a: "ab" + long(98, "é") },
  { a: long(60, "是") },
  { a: "super" + long(200, "b") + " ok" },
  { a: "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis" },
  { a: "[CLS] literal [SEP] specials [MASK] [PAD] [UNK] inside" },
  { a: "[cls] lowercase [sep] and [MASK]ed a[SEP]b [ SEP ]" },
  { a: "  leading and trailing spaces   " },
  { a: "numbers 1234567890 3.14159 1,000,000 10e-5" },
  { a: "mixed123abc abc123 12abc34" },
  { a: "x" },
  { a: "." },
  { a: "##" },
  { a: "##ing" },
  { a: "the cat", b: "sat on the mat" },
  { a: "The Cat!", b: "Sat on the MAT?" },
  { a: "a b c d e f g h i j", b: "k l m n o p q r s t", max_length: 9 },
  { a: "a b c d e f g h i j", b: "k l m n o p q r s t", max_length: 10 },
  { a: "a b c d e f g h i j k l", b: "m n", max_length: 8 },
  { a: "a b", b: "c d e f g h i j k l m n", max_length: 8 },
  { a: "a b c d", b: "e f g h i j", max_length: 7 },
  { a: "a b c d e", b: "f g h", max_length: 7 },
  { a: "a", b: "b", max_length: 3 },
  { a: "a b c", b: "d e f", max_length: 4 },
  { a: "a b c", b: "d e f", max_length: 2 },
  { a: "a b c", b: "d e f", max_length: 0 },
  { a: "", b: "d e f g h", max_length: 5 },
  { a: "a b c d e f g h i j", max_length: 5 },
  { a: "a b c d e f g h i j", max_length: 2 },
  { a: "a b c d e f g h i j", max_length: 1 },
  { a: "unaffable unaffable unaffable", max_length: 6 },
  { a: "我爱北京天安门", b: "今天天气很好", max_length: 10 },
  { a: B("bad ", [0xff], " byte") },
  { a: B("truncated ", [0xe4, 0xbd], " seq") },
  { a: B("overlong ", [0xc0, 0xaf], " and ", [0xe0, 0x80, 0xaf]) },
  { a: B("surrogate ", [0xed, 0xa0, 0x80], " cesu") },
  { a: B("lone continuation ", [0x80, 0x80, 0xbf], "x") },
  { a: B("too big ", [0xf4, 0x90, 0x80, 0x80], " and ", [0xf5, 0x80]) },
  { a: B([0xe4, 0xbd, 0xa0, 0xe5, 0xa5]) },
  { a: B("end ", [0xf0, 0x9f, 0x98]) },
  { a: B("pair ", [0xfe]), b: B([0xc3], "é") },
];

// Cases run with the shipped Chinese model's own vocabulary (models/edgetune-mini-chinese), after
// CASES: review-like sentences, traditional characters, classical text, technical words, and
// characters the pruned vocabulary lacks.
const MODEL_CHINESE_CASES = [
  { a: "这家酒店的服务很好，房间干净，下次还会再来。" },
  { a: "电池不耐用，屏幕也有坏点，非常失望！！！" },
  { a: "笔记本电脑的键盘手感不错，就是风扇声音有点大。" },
  { a: "學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？" },
  { a: "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。" },
  { a: "使用 apt-get install 安装软件包，然后运行 ls -l /usr/bin 查看。" },
  { a: "價格：￥1,299.00 元（含運費），ＶＩＰ會員９折" },
  { a: "GPU显存8GB，CPU是Intel i7-8750H，性价比高" },
  { a: "囧槑烎 𠮷野家 嗯呢 哈哈哈哈😂" },
  { a: "这本书很好看", b: "我买了两本送给朋友", max_length: 12 },
];

// ------------------------------------------------------------------------- small vocabularies

// A pruned vocabulary: the special tokens, every token the full vocabulary gives for the hand
// cases, single characters and their ## forms, and a few pieces chosen so that some words split
// differently or fail to split. Kept in the order of the full vocabulary.
async function pruneVocab(full, lowercase, extra) {
  const ref = new References(full, lowercase);
  const keep = new Set(SPECIALS);
  for (const c of CASES) {
    for (const side of [c.a, c.b]) {
      if (side === undefined) continue;
      const text = typeof side === "string" ? side : decodeReplace(side.bytes);
      const e = await ref.rustEncode(text, undefined, undefined);
      e.tokens.forEach((t) => keep.add(t));
    }
  }
  for (const t of extra) keep.add(t);
  return full.filter((t) => keep.has(t));
}

// ------------------------------------------------------------------------------ the goldens

function caseText(side) {
  if (side === undefined) return {};
  if (typeof side === "string") return { text: side, json: side };
  const text = decodeReplace(side.bytes);
  if (isValidUtf8(side.bytes)) return { text, json: text };
  return { text, hex: hex(side.bytes) };
}

function sameArray(x, y) {
  return x.length === y.length && x.every((v, i) => Number(v) === Number(y[i]));
}

async function handGoldens(name, tokens, lowercase, stripAccents, disagreements, cases = CASES) {
  const ref = new References(tokens, lowercase, stripAccents);
  const out = [];
  for (const c of cases) {
    const a = caseText(c.a);
    const b = caseText(c.b);
    const r = await ref.rustEncode(a.text, b.text, c.max_length);
    const entry = {};
    if (a.hex) { entry.a_hex = a.hex; } else { entry.a = a.json; }
    if (c.b !== undefined) { if (b.hex) entry.b_hex = b.hex; else entry.b = b.json; }
    entry.invalid_utf8 = (a.hex ? countFffdInvalid(c.a.bytes) : 0) + (b.hex ? countFffdInvalid(c.b.bytes) : 0);
    if (c.max_length !== undefined) entry.max_length = c.max_length;
    entry.ids = r.ids;
    entry.type_ids = r.type_ids;
    entry.tokens = r.tokens;
    out.push(entry);
    if (c.max_length === undefined) {
      const j = ref.jsEncode(a.text, b.text);
      if (!sameArray(j.ids, r.ids) || !sameArray(j.type_ids, r.type_ids)) {
        disagreements.push({ golden: name, a: a.json ?? a.hex, b: b.json ?? b.hex,
                             rust: r.ids, transformers_js: j.ids.map(Number) });
      }
    }
  }
  return out;
}

// Number of U+FFFD a decoder inserts for the invalid parts of `bytes` (valid U+FFFD excluded).
function countFffdInvalid(bytes) {
  const all = countFffd(decodeReplace(bytes));
  const literal = Buffer.from(bytes).toString("hex").split("efbfbd").length - 1;
  return all - literal;
}

// Real text: token ids per data line, never the text. Lines are physical line numbers (1-based,
// the header is line 1) of the data file; `column` is the text column's index after splitting on
// TAB. Pairs join a line with the next one, truncated to a small max_length.
async function realGoldens(file, column, tokens, lowercase, count, maxLength, pairCount, pairMax, disagreements) {
  const ref = new References(tokens, lowercase);
  const lines = fs.readFileSync(path.join(shared, file), "utf8").split("\n");
  const rows = [];
  for (let i = 1; i < lines.length && rows.length < count; ++i) {
    const cols = lines[i].replace(/\r$/, "").split("\t");
    if (cols.length <= column) continue;
    rows.push({ line: i + 1, text: cols[column] });
  }
  const singles = [];
  let jsAgree = 0, jsCompared = 0;
  for (const r of rows) {
    const e = await ref.rustEncode(r.text, undefined, maxLength);
    singles.push([r.line, e.ids]);
    // transformers.js truncates differently, so the two references are compared untruncated.
    const full = await ref.rustEncode(r.text, undefined, undefined);
    jsCompared++;
    const j = ref.jsEncode(r.text);
    if (sameArray(j.ids, full.ids)) jsAgree++;
    else disagreements.push({ golden: file, line: r.line, rust: full.ids, transformers_js: j.ids.map(Number) });
  }
  const pairs = [];
  for (let k = 0; k + 1 < rows.length && pairs.length < pairCount; k += 2) {
    const e = await ref.rustEncode(rows[k].text, rows[k + 1].text, pairMax);
    pairs.push([rows[k].line, rows[k + 1].line, e.ids, e.type_ids]);
  }
  return { singles, pairs, jsAgree, jsCompared };
}

// ------------------------------------------------------------------ code point character classes

// Classes of the reference's BertNormalizer / BertPreTokenizer for every code point, read back by
// probing the reference one code point at a time. HF takes them from the `unicode_categories`
// crate, whose tables are older than the Unicode of utf8proc (for example 0x2E43 is Po in
// Unicode 10 and later, but not punctuation for HF), so edgetune carries these tables rather than
// asking utf8proc for the categories.
function probeClasses() {
  const mk = (clean, chinese, strip, lower) => Tokenizer.fromString(JSON.stringify({
    ...tokenizerJson(SPECIALS, lower),
    added_tokens: [],
    normalizer: { type: "BertNormalizer", clean_text: clean, handle_chinese_chars: chinese,
                  strip_accents: strip, lowercase: lower },
  }));
  const clean = mk(true, false, false, false).getNormalizer();
  const strip = mk(false, false, true, false).getNormalizer();
  const pre = mk(false, false, false, false).getPreTokenizer();
  const other = [], mark = [], punct = [], space = [];
  for (let cp = 0; cp <= 0x10ffff; ++cp) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    const cleaned = clean.normalizeString(c);
    if (cleaned === "" && cp !== 0 && cp !== 0xfffd) other.push(cp);
    if (c.normalize("NFD") === c && strip.normalizeString(c) === "") mark.push(cp);
    const pieces = pre.preTokenizeString("a" + c + "a").length;
    if (pieces === 3) punct.push(cp);
    else if (pieces === 2) space.push(cp);
  }
  return { other, mark, punct, space };
}

function ranges(cps) {
  const out = [];
  for (const cp of cps) {
    if (out.length && out[out.length - 1][1] === cp - 1) out[out.length - 1][1] = cp;
    else out.push([cp, cp]);
  }
  return out;
}

function writeTables(classes) {
  const h = (x) => "0x" + x.toString(16).toUpperCase();
  const table = (name, what, cps) => {
    const rs = ranges(cps);
    const body = rs.map(([a, b]) => `{${h(a)}, ${h(b)}}`);
    const lines = [];
    for (let i = 0; i < body.length; i += 6) lines.push("    " + body.slice(i, i + 6).join(", ") + ",");
    return `// ${what}\n// ${rs.length} ranges, ${cps.length} code points.\n` +
           `inline constexpr CodePointRange ${name}[] = {\n${lines.join("\n")}\n};\n`;
  };
  const text =
    "// Character classes of Hugging Face's BertNormalizer / BertPreTokenizer, one table per class,\n" +
    "// as sorted inclusive code point ranges. Generated by tests/golden/tokenizer/make_goldens.mjs\n" +
    `// by probing ${REFERENCE}; do not edit by hand.\n` +
    "// Included by bert_unicode.cpp only.\n\n" +
    table("kOtherRanges", "Dropped by clean_text: Cc, Cf and Co in the reference's tables (not \\t \\n \\r).", classes.other) + "\n" +
    table("kNonspacingMarkRanges", "Dropped by strip_accents after NFD: Mn in the reference's tables.", classes.mark) + "\n" +
    table("kPunctuationRanges", "Split off by the pre-tokenizer: ASCII punctuation and P* in the reference's tables.", classes.punct) + "\n" +
    table("kWhitespaceRanges", "Split on by the pre-tokenizer (and made a space by clean_text when not dropped).", classes.space);
  fs.writeFileSync(path.join(repo, "data/src/bert_unicode_tables.inc"), text);
}

// Every code point, normalized and pre-tokenized as "a" + c + "a" by the reference (cased and
// uncased). Written as runs: `=` kept inside the word, `-` dropped, `s` split as whitespace,
// `p` split off as punctuation / CJK; anything else is listed with its pre-tokens.
function sweep(lowercase) {
  const tk = Tokenizer.fromString(JSON.stringify({ ...tokenizerJson(SPECIALS, lowercase), added_tokens: [] }));
  const norm = tk.getNormalizer();
  const pre = tk.getPreTokenizer();
  const lines = [];
  let run = null;
  const flush = () => {
    if (run) lines.push(`${run.start.toString(16)} ${run.end.toString(16)} ${run.kind}`);
    run = null;
  };
  for (let cp = 0; cp <= 0x10ffff; ++cp) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    const pieces = pre.preTokenizeString(norm.normalizeString("a" + c + "a")).map((p) => p[0]);
    let kind;
    if (pieces.length === 1 && pieces[0] === "a" + c + "a") kind = "=";
    else if (pieces.length === 1 && pieces[0] === "aa") kind = "-";
    else if (pieces.length === 2 && pieces[0] === "a" && pieces[1] === "a") kind = "s";
    else if (pieces.length === 3 && pieces[0] === "a" && pieces[1] === c && pieces[2] === "a") kind = "p";
    if (kind !== undefined && run && run.kind === kind && run.end === cp - 1) { run.end = cp; continue; }
    flush();
    if (kind !== undefined) { run = { start: cp, end: cp, kind }; continue; }
    const hexes = pieces.map((p) => [...p].map((ch) => ch.codePointAt(0).toString(16)).join(","));
    lines.push(`${cp.toString(16)} ${cp.toString(16)} ${hexes.join(" ")}`);
  }
  flush();
  return lines;
}

// ------------------------------------------------------------------------------------ main

async function main() {
  const uncasedFull = readVocab(path.join(shared, "vocab/bert-base-uncased-vocab.txt"));
  const chineseFull = readVocab(path.join(shared, "vocab/bert-base-chinese-vocab.txt"));
  const letters = "abcdefghijklmnopqrstuvwxyz0123456789";
  const extraUncased = [
    ...letters, ...[...letters].map((c) => "##" + c), ...[..."!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"],
    "un", "##aff", "##able", "##ably", "##ing", "##ed", "run", "##ning", "jump", "super", "##b",
    "cafe", "naive", "resume", "##s", "the", "a", "an", "is", "it", "##'", "中", "文", "世", "界",
  ];
  const extraChinese = [
    ...letters, ...[...letters].map((c) => "##" + c), "##ing", "##ed", "un", "##able", "the",
    "中", "文", "我", "爱", "北", "京", "天", "安", "门", "今", "气", "很", "好",
  ];
  const miniUncased = await pruneVocab(uncasedFull, true, extraUncased);
  const miniChinese = await pruneVocab(chineseFull, true, extraChinese);
  fs.writeFileSync(path.join(here, "mini-uncased-vocab.txt"), miniUncased.join("\n") + "\n");
  fs.writeFileSync(path.join(here, "mini-chinese-vocab.txt"), miniChinese.join("\n") + "\n");

  const disagreements = [];
  const header = (vocab, lowercase, stripAccents = null) => ({ format: "edgetune tokenizer golden",
    version: FORMAT_VERSION, reference: REFERENCE, vocab, do_lower_case: lowercase,
    strip_accents: stripAccents });
  const write = (file, obj) => fs.writeFileSync(path.join(here, file), JSON.stringify(obj) + "\n");

  const hand = [
    ["hand_mini_uncased.json", "mini-uncased-vocab.txt", miniUncased, true],
    ["hand_mini_chinese.json", "mini-chinese-vocab.txt", miniChinese, true],
    ["hand_mini_cased.json", "mini-uncased-vocab.txt", miniUncased, false],
    ["hand_mini_lower_keep_accents.json", "mini-uncased-vocab.txt", miniUncased, true, false],
    ["hand_full_uncased.json", "shared:vocab/bert-base-uncased-vocab.txt", uncasedFull, true],
    ["hand_full_chinese.json", "shared:vocab/bert-base-chinese-vocab.txt", chineseFull, true],
  ];
  for (const [file, vocabName, tokens, lower, strip = null] of hand) {
    write(file, { ...header(vocabName, lower, strip),
                  cases: await handGoldens(file, tokens, lower, strip, disagreements) });
  }

  const modelChinese = readVocab(path.join(repo, "models/edgetune-mini-chinese/vocab.txt"));
  write("hand_model_chinese.json", { ...header("repo:models/edgetune-mini-chinese/vocab.txt", true),
    cases: await handGoldens("hand_model_chinese.json", modelChinese, true, null, disagreements,
                             [...CASES, ...MODEL_CHINESE_CASES]) });

  const real = [
    ["real_sst2_train.json", "sst2/train.tsv", 0, "shared:vocab/bert-base-uncased-vocab.txt", uncasedFull, 1500, 512, 300, 24],
    ["real_chnsenticorp_train.json", "chnsenticorp/train.tsv", 1, "shared:vocab/bert-base-chinese-vocab.txt", chineseFull, 1200, 128, 300, 64],
  ];
  const agreement = [];
  for (const [file, data, column, vocabName, tokens, count, maxLength, pairCount, pairMax] of real) {
    const r = await realGoldens(data, column, tokens, true, count, maxLength, pairCount, pairMax, disagreements);
    write(file, { ...header(vocabName, true), data, column, max_length: maxLength, pair_max_length: pairMax,
                  lines: r.singles, pairs: r.pairs });
    agreement.push({ data, lines: r.singles.length, compared_with_transformers_js: r.jsCompared, agreed: r.jsAgree });
  }

  writeTables(probeClasses());
  fs.writeFileSync(path.join(here, "sweep_uncased.txt"), sweep(true).join("\n") + "\n");
  fs.writeFileSync(path.join(here, "sweep_cased.txt"), sweep(false).join("\n") + "\n");

  fs.writeFileSync(path.join(here, "reference_agreement.json"),
    JSON.stringify({ reference: REFERENCE, cross_check: "@huggingface/transformers 3.8.1 (transformers.js)",
                     real: agreement, disagreements }, null, 1) + "\n");
  console.log(JSON.stringify(agreement), "disagreements:", disagreements.length);
}

await main();
