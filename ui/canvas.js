// The latent canvas: tiles (image, sentence, label) on a pannable, zoomable plane; arrows are lineage.
// `element`, `props` and `server` come from gr.HTML (js_on_load with server_functions).
(async () => {
const root = element.querySelector('#canvas-root');
const $ = (s) => root.querySelector(s);
const KEY = 'blend-canvas:' + (props.preset || 'default');
let st = {tiles: {}, order: [], view: {x: 20, y: 20, k: 1}, selected: null, next: 1};
let undo = null, sweep = null, strength = 0, preview = null, restTimer = null, busy = false;
const err = (m) => { $('#bc-error').textContent = m || ''; };
const save = () => { try { localStorage.setItem(KEY, JSON.stringify(st)); } catch (e) { err('the canvas is too big to keep in this browser: save it as a file'); } };
const dirSpec = () => {
  const pos = $('#bc-pos').value.trim(), neg = $('#bc-neg').value.trim();
  if (pos || neg) return {pos, neg};
  return {name: $('#bc-dir').value};
};
const dirLabel = (d) => d.name || (d.pos + ' − ' + d.neg);
async function call(fn, args) {
  err(''); busy = true;
  try { const out = await server[fn](args); if (out && out.error) { err(out.error); return null; } return out; }
  catch (e) { err('the server did not answer (' + e + ')'); return null; }
  finally { busy = false; }
}
function addTile(t, parent, arrow, at, parent2, arrow2) {
  const id = 't' + (st.next++);
  const p = parent && st.tiles[parent];
  const roots = st.order.filter(i => !st.tiles[i].parent).length;
  const lowest = st.order.reduce((m, i) => Math.max(m, st.tiles[i].y), -320);
  const pos = at || (p ? {x: p.x + 250, y: p.y + 40 * st.order.filter(i => st.tiles[i].parent === parent).length}
                       : {x: 20, y: roots ? lowest + 320 : 20});
  st.tiles[id] = {id, x: pos.x, y: pos.y, recipe: t.recipe, image: t.image, text: t.text, label: t.label,
                  agreement: t.agreement, parent: parent || null, arrow: arrow || '', mark: t.mark || '',
                  parent2: parent2 || null, arrow2: arrow2 || '', blend: t.blend || null};
  st.order.push(id); st.selected = id; save(); render(); return id;
}
function tileHtml(t, cls) {
  const a = t.agreement || {};
  const agree = a.cosine === undefined ? '' : (a.ok ? `<div class="ok">agrees · cos ${a.cosine.toFixed(2)}</div>`
      : `<div class="warn" data-role="warning">⚠ ${esc(a.warning)} (cos ${a.cosine.toFixed(2)})</div>`);
  return `<div class="bc-tile ${cls}" data-id="${t.id}" style="left:${t.x}px;top:${t.y}px">
    <div class="label">${t.mark ? `<span class="mark">${esc(t.mark)}</span> ` : ''}${esc(t.label)}</div><img src="${t.image}" alt="${esc(t.text)}" draggable="false">
    <div class="text">${esc(t.text)}</div>${agree}${t.blend && !cls.includes('preview') ? `<label class="bc-handle" title="the blend's share: drag towards one tile or the other">${esc(st.tiles[t.blend.a] ? st.tiles[t.blend.a].label : 'a')} <input type="range" class="bc-wh" min="0" max="1" step="0.05" value="${t.blend.weight}"> ${esc(st.tiles[t.blend.b] ? st.tiles[t.blend.b].label : 'b')}</label>` : ''}
    ${cls.includes('preview') ? '' : `<div class="tools"><a href="${t.image}" download="blend-${t.id}-${slug(t.text)}.png"><button data-act="download">⬇ PNG</button></a>
    <button data-act="recipe">recipe</button><button data-act="use" title="use this tile as an input of the workspace chosen above">use in ▸</button><button data-act="delete">✕</button></div>`}</div>`;
}
const esc = (s) => String(s || '').replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const slug = (s) => String(s || '').toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 50);
function render() {
  const w = $('#bc-world');
  w.style.transform = `translate(${st.view.x}px,${st.view.y}px) scale(${st.view.k})`;
  let svg = '<svg class="bc-arrows" width="1" height="1"><defs><marker id="bc-head" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#667"/></marker></defs>';
  for (const id of st.order) {
    const t = st.tiles[id];
    for (const [pid, label] of [[t.parent, t.arrow], [t.parent2, t.arrow2]]) {
      const p = pid && st.tiles[pid]; if (!p) continue;
      const x1 = p.x + 168, y1 = p.y + 90, x2 = t.x, y2 = t.y + 90;
      svg += `<line x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke="#667" stroke-width="2" marker-end="url(#bc-head)"/>`
           + `<text x="${(x1 + x2) / 2}" y="${(y1 + y2) / 2 - 6}" text-anchor="middle" data-arrow="${id}">${esc(label)}</text>`;
    }
  }
  svg += '</svg>';
  w.innerHTML = svg + st.order.map(id => tileHtml(st.tiles[id], id === st.selected ? 'selected' : '')).join('')
    + (preview ? tileHtml(preview, 'preview') : '');
  $('#bc-count').textContent = st.order.length + ' tile(s)';
  $('#bc-selected').textContent = st.selected ? st.tiles[st.selected].label + ': ' + st.tiles[st.selected].text : '(select a tile)';
}
// ---------------------------------------------------------------- new tiles
$('#bc-add-words').onclick = async () => {
  const t = await call('canvas_tile', {kind: 'text', value: $('#bc-words').value}); if (t) addTile(t);
};
$('#bc-file').onchange = async (ev) => {
  const f = ev.target.files[0]; if (!f) return;
  const uri = await new Promise((ok) => { const r = new FileReader(); r.onload = () => ok(r.result); r.readAsDataURL(f); });
  const t = await call('canvas_tile', {kind: 'image', value: uri}); ev.target.value = '';
  if (t) addTile(t); else $('#bc-error').textContent = f.name + ': ' + $('#bc-error').textContent;
};
$('#bc-example').onchange = async (ev) => { if (!ev.target.value) return; const t = await call('canvas_tile', {kind: 'image', value: ev.target.value}); ev.target.value = ''; if (t) addTile(t); };
let wordsBox = 'bc-words';  // the chips write into the words box last used: new tile, towards or away from
['bc-words', 'bc-pos', 'bc-neg'].forEach((id) => $('#' + id).addEventListener('focus', () => { wordsBox = id; }));
root.querySelectorAll('.bc-vocab span').forEach((s) => s.onclick = () => {
  const box = $('#' + wordsBox); box.value = (box.value.trim() + ' ' + s.textContent).trim(); box.focus();
  if (wordsBox !== 'bc-words') sweep = null;
});
// ---------------------------------------------------------------- strength drag
const track = $('#bc-track'), knob = $('#bc-knob');
const MAX = 3;
const setKnob = (s) => { knob.style.left = ((s + MAX) / (2 * MAX) * track.clientWidth) + 'px'; $('#bc-strength').textContent = (s >= 0 ? '+' : '') + s.toFixed(2); };
function showPreview(img, text, s, agreement) {
  const p = st.tiles[st.selected]; if (!p) return;
  preview = {id: 'preview', x: p.x + 250, y: p.y - 10, image: img, text, label: 'preview ' + dirLabel(sweep.dir) + ' ' + (s >= 0 ? '+' : '') + s.toFixed(2), agreement};
  render(); $('#bc-previews').textContent = String(++previews);
}
let previews = 0, dragging = false;
async function ensureSweep() {
  const t = st.tiles[st.selected];
  if (!t) { err('select a tile first: click one, or add words or an image'); return false; }
  const dir = dirSpec(), key = st.selected + '|' + JSON.stringify(dir);
  if (sweep && sweep.key === key) return true;
  $('#bc-status').textContent = 'decoding a sweep of strengths…';
  const out = await call('canvas_sweep', {recipe: t.recipe, direction: dir});
  $('#bc-status').textContent = '';
  if (!out) return false;
  sweep = {key, dir, ...out}; root.dataset.sweep = 'ready'; return true;
}
const nearest = (s) => sweep.strengths.reduce((b, x, i) => Math.abs(x - s) < Math.abs(sweep.strengths[b] - s) ? i : b, 0);
function strengthAt(ev) {
  const r = track.getBoundingClientRect();
  return Math.round(Math.max(-MAX, Math.min(MAX, ((ev.clientX - r.left) / r.width) * 2 * MAX - MAX)) * 20) / 20;
}
track.addEventListener('pointerdown', async (ev) => {
  ev.preventDefault(); track.setPointerCapture(ev.pointerId); dragging = true;
  strength = strengthAt(ev); setKnob(strength);
  if (!(await ensureSweep())) { dragging = false; return; }
  const i = nearest(strength); showPreview(sweep.images[i], sweep.texts[i], strength, sweep.agreement[i]);
});
track.addEventListener('pointermove', (ev) => {
  if (!dragging) return;
  strength = strengthAt(ev); setKnob(strength);
  if (!sweep) return;
  const i = nearest(strength); showPreview(sweep.images[i], sweep.texts[i], strength, sweep.agreement[i]);
  clearTimeout(restTimer);
  restTimer = setTimeout(async () => {  // the pointer rests: the exact strength
    if (!dragging) return;
    const s = strength, out = await call('canvas_child', {recipe: st.tiles[st.selected].recipe, direction: sweep.dir, strength: s});
    if (out && dragging && s === strength) showPreview(out.image, out.text, s, out.agreement);
  }, 300);
});
track.addEventListener('pointerup', async () => {
  if (!dragging) return; dragging = false; clearTimeout(restTimer);
  if (!sweep) return;
  const parent = st.selected, s = strength;
  $('#bc-status').textContent = 'committing…';
  const out = await call('canvas_child', {recipe: st.tiles[parent].recipe, direction: sweep.dir, strength: s});
  $('#bc-status').textContent = '';
  preview = null;
  if (out) { addTile(out, parent, dirLabel(sweep.dir) + ' ' + (s >= 0 ? '+' : '') + s.toFixed(2)); sweep = null; root.dataset.sweep = ''; }
  else render();
});
$('#bc-dir').onchange = $('#bc-pos').oninput = $('#bc-neg').oninput = () => { sweep = null; };
// ---------------------------------------------------------------- tiles: select, move, drop to blend, tools; pan, zoom
const view = $('#bc-view');
let drag = null;
view.addEventListener('pointerdown', (ev) => {
  if (ev.target.closest('button, a, input')) return;
  const el = ev.target.closest('.bc-tile');
  view.setPointerCapture(ev.pointerId);
  if (el && el.dataset.id !== 'preview') {
    const t = st.tiles[el.dataset.id];
    if (st.selected !== t.id) { st.selected = t.id; sweep = null; render(); }
    drag = {kind: 'tile', id: t.id, sx: ev.clientX, sy: ev.clientY, x: t.x, y: t.y};
  } else drag = {kind: 'pan', sx: ev.clientX, sy: ev.clientY, x: st.view.x, y: st.view.y};
});
function tileUnder(ev, except) {
  for (const el of root.ownerDocument.elementsFromPoint(ev.clientX, ev.clientY)) {
    const t = el.closest && el.closest('.bc-tile');
    if (t && t.dataset.id !== except && t.dataset.id !== 'preview' && root.contains(t)) return t.dataset.id;
  }
  return null;
}
view.addEventListener('pointermove', (ev) => {
  if (!drag) return;
  const dx = ev.clientX - drag.sx, dy = ev.clientY - drag.sy;
  if (drag.kind === 'pan') { st.view.x = drag.x + dx; st.view.y = drag.y + dy; $('#bc-world').style.transform = `translate(${st.view.x}px,${st.view.y}px) scale(${st.view.k})`; return; }
  const t = st.tiles[drag.id]; t.x = drag.x + dx / st.view.k; t.y = drag.y + dy / st.view.k;
  const el = root.querySelector(`.bc-tile[data-id="${t.id}"]`); el.style.left = t.x + 'px'; el.style.top = t.y + 'px';
  root.querySelectorAll('.bc-tile.drop').forEach(e => e.classList.remove('drop'));
  const under = tileUnder(ev, t.id); if (under) root.querySelector(`.bc-tile[data-id="${under}"]`).classList.add('drop');
});
view.addEventListener('pointerup', async (ev) => {
  const d = drag; drag = null; if (!d) return;
  if (d.kind === 'tile') {
    const under = tileUnder(ev, d.id);
    if (under) {  // dropped on another tile: blend them, then put the dragged one back
      const a = st.tiles[d.id], b = st.tiles[under]; a.x = d.x; a.y = d.y;
      const w = 0.5;  // the handle on the new tile moves it afterwards
      const out = await call('canvas_blend', {a: a.recipe, b: b.recipe, weight: w});
      if (out) {
        const at = {x: (a.x + b.x) / 2 + (Math.abs(a.x - b.x) < 200 ? 230 : 0), y: Math.max(a.y, b.y) + 300};
        addTile({...out, blend: {a: a.id, b: b.id, weight: w}}, a.id, shareLabel(1 - w), at, b.id, shareLabel(w));
        return;
      }
    }
  }
  save(); render();
});
view.addEventListener('wheel', (ev) => {
  ev.preventDefault();
  const k = Math.max(0.25, Math.min(3, st.view.k * (ev.deltaY < 0 ? 1.1 : 1 / 1.1)));
  const r = view.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
  st.view.x = mx - (mx - st.view.x) * k / st.view.k; st.view.y = my - (my - st.view.y) * k / st.view.k; st.view.k = k;
  save(); render();
}, {passive: false});
const shareLabel = (w) => 'blend ' + Math.round(w * 100) + '%';
view.addEventListener('change', async (ev) => {  // a blend's weight handle: blend the two tiles again
  if (!ev.target.classList.contains('bc-wh')) return;
  const t = st.tiles[ev.target.closest('.bc-tile').dataset.id], a = st.tiles[t.blend.a], b = st.tiles[t.blend.b];
  if (!a || !b) return err('one of the two blended tiles was deleted: undo, or blend again');
  const w = parseFloat(ev.target.value);
  $('#bc-status').textContent = 'blending…';
  const out = await call('canvas_blend', {a: a.recipe, b: b.recipe, weight: w});
  $('#bc-status').textContent = '';
  if (!out) return render();
  Object.assign(t, {recipe: out.recipe, image: out.image, text: out.text, label: out.label, agreement: out.agreement,
                    arrow: shareLabel(1 - w), arrow2: shareLabel(w)});
  t.blend.weight = w; save(); render();
});
function useTile(t) {  // the tile becomes an input of another workspace (Python: use_tile_events in app.py)
  if (!t) return err('select a tile first');
  err('');
  window.dispatchEvent(new CustomEvent('blend-canvas-use', {detail: JSON.stringify({nonce: Date.now() + Math.random(),
    target: $('#bc-target').value, tile: {id: t.id, recipe: t.recipe, image: t.image, text: t.text, label: t.label}})}));
}
window.addEventListener('blend-canvas-inbox', (ev) => {  // a workspace's result lands here, as tiles
  let msg; try { msg = JSON.parse(ev.detail); } catch (e) { return; }
  if (!msg || !msg.tiles || !msg.tiles.length || msg.nonce === lastInbox) return;
  lastInbox = msg.nonce;
  const lowest = st.order.reduce((m, i) => Math.max(m, st.tiles[i].y), -320);
  const x0 = 20, y0 = st.order.length ? lowest + 320 : 20, ids = [], cols = msg.cols || 8;
  msg.tiles.forEach((t, i) => {
    const links = (t.link !== null && t.link !== undefined ? [[ids[t.link], t.arrow]] : [])
      .concat((t.from || []).filter((f) => st.tiles[f[0]]));
    const at = {x: x0 + (i % cols) * 200, y: y0 + Math.floor(i / cols) * 300};
    ids.push(addTile(t, links[0] && links[0][0], links[0] && links[0][1], at, links[1] && links[1][0], links[1] && links[1][1]));
  });
  root.dataset.landed = String((parseInt(root.dataset.landed || '0') + msg.tiles.length));
});
let lastInbox = null;
view.addEventListener('click', (ev) => {
  const b = ev.target.closest('button'); if (!b) return;
  const id = ev.target.closest('.bc-tile').dataset.id, t = st.tiles[id];
  if (b.dataset.act === 'use') useTile(t);
  if (b.dataset.act === 'recipe') { $('#bc-recipe').textContent = JSON.stringify(t.recipe, null, 1); $('#bc-recipe-box').open = true; }
  if (b.dataset.act === 'delete') {
    undo = {tile: t, index: st.order.indexOf(id)}; delete st.tiles[id]; st.order = st.order.filter(i => i !== id);
    if (st.selected === id) st.selected = null; $('#bc-undo').disabled = false; save(); render();
  }
});
$('#bc-undo').onclick = () => { if (!undo) return; st.tiles[undo.tile.id] = undo.tile; st.order.splice(undo.index, 0, undo.tile.id); undo = null; $('#bc-undo').disabled = true; save(); render(); };
$('#bc-use').onclick = () => useTile(st.tiles[st.selected]);
// ---------------------------------------------------------------- one JSON file
$('#bc-save').onclick = () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify({version: 1, canvas: st}, null, 1)], {type: 'application/json'}));
  a.download = 'blend-canvas.json'; a.click();
};
$('#bc-load').onchange = async (ev) => {
  const f = ev.target.files[0]; if (!f) return;
  try { const d = JSON.parse(await f.text()); if (!d.canvas || !d.canvas.tiles) throw new Error('no canvas in it');
        st = d.canvas; save(); render(); err(''); }
  catch (e) { err(f.name + ' is not a blend canvas file (' + e.message + ')'); }
  ev.target.value = '';
};
$('#bc-clear').onclick = () => { if (!st.order.length || confirm('Remove every tile from the canvas?')) { st = {tiles: {}, order: [], view: {x: 20, y: 20, k: 1}, selected: null, next: 1}; save(); render(); } };
try { const saved = JSON.parse(localStorage.getItem(KEY) || 'null'); if (saved && saved.tiles) st = saved; } catch (e) {}
setKnob(0); render(); root.dataset.ready = '1';
})();
