#!/usr/bin/env bash
# Fetches the openly licensed Chinese text edgetune pretrains models/edgetune-mini-chinese on, from
# Debian's archive and the npm registry, into an ignored folder (default .cache/corpus-zh/), and
# extracts it as plain text: one paragraph per line, a blank line between documents (the input of
# `edgetune pretrain` and `edgetune prune-vocab`).
#
#   manpages.txt   the Simplified Chinese manual pages, groff markup removed, one page per
#                  document (Debian manpages-zh, GFDL-1.2+)
#   reference.txt  the Debian Reference, Simplified Chinese, one chapter per document
#                  (Debian debian-reference-zh-cn, GPL-2+)
#   faq.txt        the Debian FAQ, Simplified Chinese, one chapter per document
#                  (Debian debian-faq-zh-cn, GPL-2+)
#   libreoffice.txt  the LibreOffice help, Simplified Chinese, one page per document (Debian
#                  libreoffice-help-zh-cn, MPL-2.0)
#   handbook.txt   The Debian Administrator's Handbook, Simplified Chinese, one section per document
#                  (Debian debian-handbook, GPL-2+ or CC-BY-SA-3.0)
#   guides.txt     the GNOME desktop help (gnome-user-docs, CC-BY-SA-3.0), the Debian Edu manual
#                  (debian-edu-doc-zh-cn, GPL-2+) and the New Maintainers' Guide (maint-guide-zh-cn,
#                  GPL-2+), Simplified Chinese, one page per document
#   classical.txt  classical Chinese from chinese-poetry (npm, MIT): the Analects, Mencius, the
#                  Great Learning, the Doctrine of the Mean, the Guwen Guanzhi essays, the Book of
#                  Songs and the Three Hundred Tang Poems, then Tang poems in the package's order,
#                  cut at 300,000 characters so classical text stays a minority of the corpus
#
# Debian packages are downloaded without installing (apt-get download, dpkg-deb -x) at pinned
# versions and checked by sha256; the npm package is pinned and checked by npm against the
# registry's integrity hash. Nothing here is committed, and none of it is an evaluation set.
# Idempotent: a file already extracted is kept. Needs apt-get, node and npm (node and npm are
# installed from Debian when missing).
#   scripts/fetch_corpus_zh.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-.cache/corpus-zh}"
mkdir -p "$out/deb" "$out/npm"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  source scripts/deps.sh
  edgetune_install_missing nodejs npm
fi

# name=version sha256 of the .deb
debs=(
  "manpages-zh=1.6.4.0-1 81bae29495f6445db290e3f329f1203eb19b651c2a7ea165b74ebdc853a32ac1"
  "debian-reference-zh-cn=2.100 6d2d8d9a646397e28b04cdff23d2e4374101ebf9be348e35961af62c8a2d0977"
  "debian-faq-zh-cn=11.1 3545356b1aa04d87e91dd15e8406210cf5b4f476662e597897bcb42234591758"
  "libreoffice-help-zh-cn=4:7.4.7-1+deb12u14 db867cdece4c2f9c7eebe65e519c6cf386fdcf49d6e061db3dffec893b3e1dee"
  "debian-handbook=11.20220922 3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa"
  "gnome-user-docs=43.0-2 0d635a840747958ca84da778b40d341f1155603851f922c9a171f5a181d6a39f"
  "debian-edu-doc-zh-cn=2.12.23~deb12u1 d98fa11ea24238d38631d756ab75144c3d97dbd2a2e5a0223f2f7d8d975ecff2"
  "maint-guide-zh-cn=1.2.53 d605b60a034f63857bc44205aed5ad7ba6e17d0d2b1ba5e79179b4e7ec4ee4bc"
)
for entry in "${debs[@]}"; do
  spec="${entry% *}"
  sha="${entry#* }"
  name="${spec%=*}"
  version="${spec#*=}"
  deb="$out/deb/${name}_${version/:/%3a}_all.deb"   # apt writes an epoch's colon as %3a
  if [ ! -f "$deb" ]; then
    echo "fetch_corpus_zh: downloading $spec"
    (cd "$out/deb" && apt-get download -q "$spec" 2>&1 | grep -v -e '^Get:' -e '^Fetched' -e unsandboxed || true)
    [ -f "$deb" ] || { echo "fetch_corpus_zh: apt-get download $spec failed (run apt-get update; a security update may have replaced this version, see apt-cache policy $name)" >&2; exit 1; }
  fi
  echo "$sha  $deb" | sha256sum --check --quiet - ||
    { echo "fetch_corpus_zh: $deb is not $spec (sha256 differs)" >&2; exit 1; }
  if [ ! -d "$out/deb/$name" ]; then
    dpkg-deb -x "$deb" "$out/deb/$name.tmp"
    mv "$out/deb/$name.tmp" "$out/deb/$name"
  fi
done

poetry=chinese-poetry@2.0.1
tgz="$out/npm/chinese-poetry-2.0.1.tgz"
if [ ! -f "$tgz" ]; then
  echo "fetch_corpus_zh: downloading $poetry"
  (cd "$out/npm" && npm pack --silent "$poetry" >/dev/null)
fi
if [ ! -d "$out/npm/chinese-poetry-2.0.1" ]; then
  mkdir -p "$out/npm/chinese-poetry-2.0.1.tmp"
  tar xzf "$tgz" -C "$out/npm/chinese-poetry-2.0.1.tmp"
  mv "$out/npm/chinese-poetry-2.0.1.tmp" "$out/npm/chinese-poetry-2.0.1"
fi

# Extraction, in node (already needed for npm). Each output goes to a temporary name first, so an
# interrupted run never leaves a half-written file that a later run would keep.
OUT="$out" node - <<'EOF'
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const out = process.env.OUT;
const deb = (name, ...rest) => path.join(out, 'deb', name, ...rest);
const han = /[\u3400-\u9fff]/;
const write = (file, docs) => {
  const target = path.join(out, file);
  if (fs.existsSync(target)) return;
  const text = docs.filter((d) => d.length > 0).join('\n\n') + '\n';
  fs.writeFileSync(target + '.tmp', text);
  fs.renameSync(target + '.tmp', target);
  const lines = text.split('\n').filter((l) => l.length > 0).length;
  const chars = [...text].filter((c) => han.test(c)).length;
  console.log(`fetch_corpus_zh: ${target}: ${lines} lines, ${chars} Han characters`);
};
const gunzip = (file) => zlib.gunzipSync(fs.readFileSync(file)).toString('utf8');
// Paragraphs of a text: blocks between blank lines, each block's line breaks made spaces; only
// paragraphs with Chinese in them are kept (tables of contents and command listings mostly lack it).
const paragraphs = (text) =>
  text.split(/\n\s*\n/).map((p) => p.replace(/\s+/g, ' ').trim()).filter((p) => han.test(p));

// A manual page's text: requests (lines starting with '.' or "'") end a paragraph; the font
// requests (.B, .I, .BR, ...) and headings keep their arguments as text; escapes are removed.
const unroff = (src) => {
  const paras = [];
  let cur = [];
  const flush = () => { if (cur.length) paras.push(cur.join(' ')); cur = []; };
  const clean = (s) => s
    .replace(/\\f(\[[^\]]*\]|\(..|.)/g, '')
    .replace(/\\s[+-]?\d/g, '')
    .replace(/\\\((..)/g, (_, c) => ({ em: '—', en: '–', lq: '“', rq: '”', hy: '-', bu: '•' })[c] || '')
    .replace(/\\[-e&|^ 0:%]/g, (m) => ({ '\\-': '-', '\\e': '\\', '\\ ': ' ', '\\0': ' ' })[m] || '')
    .replace(/\\"$/, '').replace(/\\".*$/, '');
  for (const line of src.split('\n')) {
    if (/^['.]\\"/.test(line)) continue;
    const m = /^[.'](\w+)\s*(.*)$/.exec(line);
    if (m) {
      const [, req, args] = m;
      if (/^(B|I|BR|BI|IB|IR|RB|RI|SM|SB)$/.test(req)) {
        cur.push(clean(args.replace(/"([^"]*)"/g, '$1')));
      } else {
        flush();
        if (/^(SH|SS)$/.test(req)) paras.push(clean(args.replace(/"/g, '')));
      }
      continue;
    }
    if (line.trim() === '') { flush(); continue; }
    cur.push(clean(line));
  }
  flush();
  return paras.map((p) => p.replace(/\s+/g, ' ').trim()).filter((p) => han.test(p));
};

{
  const root = deb('manpages-zh', 'usr', 'share', 'man', 'zh_CN');
  const pages = [];
  for (const section of fs.readdirSync(root).sort()) {
    for (const f of fs.readdirSync(path.join(root, section)).sort()) {
      const file = path.join(root, section, f);
      if (fs.lstatSync(file).isSymbolicLink()) continue;
      const src = f.endsWith('.gz') ? gunzip(file) : fs.readFileSync(file, 'utf8');
      if (/^\.so /m.test(src) && src.split('\n').length < 5) continue;
      pages.push(unroff(src).join('\n'));
    }
  }
  write('manpages.txt', pages);
}

// The Debian Reference and the FAQ as their packages' plain-text renderings: chapters start at a
// line "N. Title" in the first column, after the table of contents.
const chapters = (text) => {
  const lines = text.split('\n');
  const starts = [];
  lines.forEach((l, i) => { if (/^\d+\. \S/.test(l)) starts.push(i); });
  const body = starts.filter((s, k) => k > 0 && starts.indexOf(s) >= starts.length / 2);
  const docs = [];
  for (let k = 0; k < body.length; k++) {
    docs.push(paragraphs(lines.slice(body[k], body[k + 1] ?? lines.length).join('\n')).join('\n'));
  }
  return docs;
};
write('reference.txt',
  chapters(gunzip(deb('debian-reference-zh-cn', 'usr', 'share', 'debian-reference', 'debian-reference.zh-cn.txt.gz'))));
write('faq.txt',
  chapters(gunzip(deb('debian-faq-zh-cn', 'usr', 'share', 'doc', 'debian', 'FAQ', 'debian-faq.zh-cn.txt.gz'))));

// HTML and Mallard pages as text: the page's navigation (head, script, header, aside, nav, footer)
// is dropped, block elements end a paragraph, other tags are removed and entities decoded.
const walk = (dir, ok) => fs.readdirSync(dir, { withFileTypes: true })
  .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  .flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name), ok) : ok(e.name) ? [path.join(dir, e.name)] : []));
const entities = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'", nbsp: ' ' };
const detag = (src) => src
  .replace(/<!--[\s\S]*?-->/g, '')
  .replace(/<(head|script|style|header|aside|nav|footer)\b[\s\S]*?<\/\1>/gi, '')
  .replace(/<\/?(p|h[1-6]|li|td|th|tr|div|pre|br|dt|dd|title|item|table|section|note|caption|figure|blockquote)\b[^>]*>/gi, '\n\n')
  .replace(/<[^>]*>/g, '')
  .replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (m, e) => (e[0] === '#'
    ? String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10))
    : (entities[e] ?? m)));
const pages = (files) => files.map((f) => paragraphs(detag(fs.readFileSync(f, 'utf8'))).join('\n'));
write('libreoffice.txt', pages(walk(deb('libreoffice-help-zh-cn', 'usr', 'share', 'libreoffice', 'help', 'zh-CN'),
  (n) => n.endsWith('.html'))));
write('handbook.txt', pages(walk(deb('debian-handbook', 'usr', 'share', 'doc', 'debian-handbook', 'html', 'zh-CN'),
  (n) => n.endsWith('.html'))));
write('guides.txt', pages([
  ...walk(deb('gnome-user-docs', 'usr', 'share', 'help', 'zh_CN'), (n) => n.endsWith('.page')),
  deb('debian-edu-doc-zh-cn', 'usr', 'share', 'doc', 'debian-edu-doc-zh-cn', 'debian-edu-bookworm-manual.html'),
  ...walk(deb('maint-guide-zh-cn', 'usr', 'share', 'doc', 'maint-guide-zh-cn', 'html'), (n) => n.endsWith('.html')),
]));

{
  const dist = path.join(out, 'npm', 'chinese-poetry-2.0.1', 'package', 'dist');
  const read = (...p) => JSON.parse(fs.readFileSync(path.join(dist, ...p), 'utf8'));
  const list = (j) => (Array.isArray(j) ? j : [j]);
  const docs = [];
  const add = (items) => { for (const it of list(items)) docs.push((it.paragraphs || it.content || []).join('\n')); };
  add(read('lunyu', 'lunyu.json'));
  for (const f of ['mengzi.json', 'daxue.json', 'zhongyong.json']) add(read('sishuwujing', f));
  add(read('mengxue', 'guwenguanzhi.json').content.flatMap((v) => v.content));
  add(read('shijing', 'shijing.json'));
  add(read('mengxue', 'tangshisanbaishou.json').content.flatMap((c) => c.content));
  const tang = fs.readdirSync(path.join(dist, 'quantangshi')).filter((f) => /^poet\.tang\.\d+\.json$/.test(f))
    .sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2]));
  for (const f of tang) add(read('quantangshi', f));
  const budget = 300000;
  const kept = [];
  let chars = 0;
  for (const d of docs) {
    if (d.length === 0) continue;
    if (chars + d.length > budget) break;
    kept.push(d);
    chars += d.length;
  }
  write('classical.txt', kept);
}
EOF

echo "fetch_corpus_zh: corpus in $out: manpages.txt reference.txt faq.txt libreoffice.txt handbook.txt guides.txt classical.txt"
