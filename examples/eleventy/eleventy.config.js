// Eleventy 3 configuration: serve imgbuild's images and render them as <picture>.
// `imgbuild build` writes generated/ (the images and manifest.json); `{% picture "hero" %}`
// turns one manifest entry into the same markup as `imgbuild html hero`.
import fs from "node:fs";

const GENERATED = "generated";
const BASE = "/img/generated/";
const MIME = { avif: "image/avif", webp: "image/webp", jpeg: "image/jpeg", png: "image/png" };

const escape = (s) =>
  String(s).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

// One <source> per format but the last, in the spec's order of preference; the last format is
// the <img> fallback, whose width and height are those of its largest file (no layout shift).
export function picture(manifest, name, sizes = "100vw") {
  const img = manifest.images[name];
  if (!img) throw new Error(`picture: no image named "${name}" in ${GENERATED}/manifest.json (run imgbuild build)`);
  const list = img.variants.length ? img.variants : [img.original];
  const byFormat = new Map();
  for (const v of list) byFormat.set(v.format, [...(byFormat.get(v.format) ?? []), v]);
  const formats = [...byFormat.keys()];
  const srcset = (vs) => vs.map((v) => `${escape(BASE + v.path)} ${v.width}w`).join(", ");
  const fallback = byFormat.get(formats.at(-1));
  const big = fallback.reduce((a, b) => (b.width > a.width ? b : a));
  const lines = ["<picture>"];
  for (const f of formats.slice(0, -1)) {
    lines.push(`  <source type="${MIME[f]}" srcset="${srcset(byFormat.get(f))}" sizes="${escape(sizes)}">`);
  }
  const srcsetAttr = img.variants.length ? ` srcset="${srcset(fallback)}" sizes="${escape(sizes)}"` : "";
  lines.push(`  <img src="${escape(BASE + big.path)}"${srcsetAttr} width="${big.width}" height="${big.height}" ` +
    `alt="${escape(img.alt)}" loading="lazy" decoding="async">`);
  lines.push("</picture>");
  return lines.join("\n");
}

export default function (eleventyConfig) {
  eleventyConfig.addPassthroughCopy({ [GENERATED]: "img/generated" });
  // `eleventy --serve` rebuilds when imgbuild rewrites the manifest (e.g. under `imgbuild watch`)
  eleventyConfig.addWatchTarget(`${GENERATED}/manifest.json`);
  eleventyConfig.addShortcode("picture", (name, sizes) => {
    // read on every call, so a serve session always renders the manifest on disk
    const manifest = JSON.parse(fs.readFileSync(`${GENERATED}/manifest.json`, "utf8"));
    return picture(manifest, name, sizes);
  });
  return { dir: { input: "src", output: "_site" } };
}
