// Files, images and voice on the page (docs/protocol.md "Files, images and voice"):
// a file message's bubble (an image inline, voice as a player, any other file as a
// link) and the signed links it needs (an <img> cannot send the token: GET
// /api/files/<id>/link answers URLs that work without it until they expire).
// Every name reaches the DOM through textContent.
import { parseFileContent } from "./skyeim-client.js";

const LINK_MARGIN_MS = 60000;    // a link this close to its expiry is fetched anew

export function createFiles({ api }) {
  const links = new Map();        // fileId -> {promise, expiresAt (ms)}

  function link(fileId) {
    const cur = links.get(fileId);
    if (cur && cur.expiresAt - LINK_MARGIN_MS > Date.now()) return cur.promise;
    const entry = { expiresAt: Infinity, promise: null };
    entry.promise = api("GET", `/api/files/${encodeURIComponent(fileId)}/link`).then((d) => {
      entry.expiresAt = d.expiresAt * 1000;
      return d;
    }, (e) => { links.delete(fileId); throw e; });
    links.set(fileId, entry);
    return entry.promise;
  }

  function sizeText(n) {
    if (!Number.isFinite(n)) return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  /** The nodes of a file message's bubble, or null when its content is not a file. */
  function render(m) {
    const f = parseFileContent(m.contentType, m.content);
    if (!f) return null;
    const name = typeof f.name === "string" && f.name ? f.name : "file";
    const box = document.createElement("span");
    box.className = "file";
    box.dataset.fileId = f.fileId;
    if (m.contentType === 2) {
      const img = document.createElement("img");
      img.className = "inline-image";
      img.alt = name;
      if (Number.isSafeInteger(f.width) && Number.isSafeInteger(f.height)) {
        const scale = Math.min(1, 240 / Math.max(f.width, f.height));
        img.width = Math.max(1, Math.round(f.width * scale));
        img.height = Math.max(1, Math.round(f.height * scale));
      }
      const a = document.createElement("a");
      a.target = "_blank";
      a.rel = "noopener";
      a.append(img);
      box.append(a);
      link(f.fileId).then((d) => {
        img.src = d.thumbnailUrl || d.url;
        a.href = d.url;
      }, () => { img.alt = `${name} (not available)`; });
      return box;
    }
    const a = document.createElement("a");
    a.className = "file-link";
    a.textContent = name;
    a.download = name;
    const size = document.createElement("span");
    size.className = "file-size muted";
    size.textContent = ` ${sizeText(f.size)}`;
    box.append(a, size);
    if (m.contentType === 4) {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      box.prepend(audio);
      link(f.fileId).then((d) => { audio.src = d.url; a.href = d.url; }, () => {});
    } else {
      link(f.fileId).then((d) => { a.href = d.url; }, () => { a.textContent = `${name} (not available)`; });
    }
    return box;
  }

  return { render, link };
}
