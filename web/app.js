// The lisa-ts page: one image, a conversation about it, the masks drawn over it. Plain modules, no build step, no CDN.
const $ = (id) => document.getElementById(id);
// The CLI's overlay colours: the first mask in the official red, then distinct hues.
const COLOURS = [
  [255, 0, 0],
  [0, 200, 0],
  [30, 100, 255],
  [255, 200, 0],
  [200, 0, 255],
  [0, 220, 220],
  [255, 120, 0],
  [150, 80, 40],
];

const state = {
  imageId: null,
  pixels: null, // ImageData of the image, at its natural size
  history: [], // [{ question, answer }], sent back each turn (the server reuses its KV cache)
  masks: [], // [{ id, turn, index, colour, data: Uint8Array, rle, bbox, area, score, png, visible }]
  points: [],
  box: null,
  mode: 'none',
  hover: null,
  busy: false,
};

const view = $('view');
const prompts = $('prompts');
const status = (s) => ($('status').textContent = s);

function headers(extra = {}) {
  const key = $('api-key').value || localStorage.getItem('lisa-api-key') || '';
  return key ? { ...extra, authorization: `Bearer ${key}` } : extra;
}

async function api(path, init) {
  const res = await fetch(path, { ...init, headers: headers(init.headers) });
  if (res.status === 401) $('key-row').hidden = false;
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      msg = (await res.json()).error.message;
    } catch {}
    throw new Error(msg);
  }
  return res;
}

// ---- image ---------------------------------------------------------------------------------------------------
async function setImage(blob) {
  if (!blob || !/^image\/(jpeg|png|webp)$/.test(blob.type))
    return addMessage('error', `not a JPEG, PNG or WebP image (${blob?.type || 'unknown type'})`);
  const bitmap = await createImageBitmap(blob).catch(() => null);
  if (!bitmap) return addMessage('error', 'the browser cannot decode this image');
  view.width = prompts.width = bitmap.width;
  view.height = prompts.height = bitmap.height;
  const ctx = view.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  state.pixels = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  state.imageId = null;
  $('canvas-wrap').hidden = false;
  $('drop-hint').hidden = true;
  $('stage').classList.add('loaded');
  newChat();
  clearPrompts();
  status('encoding the image…');
  try {
    const r = await (await api('/v1/images', { method: 'POST', body: blob, headers: { 'content-type': blob.type } })).json();
    state.imageId = r.image_id;
    status(`image ${r.width}×${r.height} ready (encoded in ${Math.round(r.encode_ms)} ms)`);
  } catch (e) {
    status('');
    addMessage('error', e.message);
  }
}

$('file').addEventListener('change', (e) => e.target.files[0] && setImage(e.target.files[0]));
const stage = $('stage');
stage.addEventListener('dragover', (e) => {
  e.preventDefault();
  stage.classList.add('drag');
});
stage.addEventListener('dragleave', () => stage.classList.remove('drag'));
stage.addEventListener('drop', (e) => {
  e.preventDefault();
  stage.classList.remove('drag');
  const f = [...e.dataTransfer.files].find((x) => x.type.startsWith('image/'));
  if (f) setImage(f);
});
document.addEventListener('paste', (e) => {
  const item = [...e.clipboardData.items].find((x) => x.type.startsWith('image/'));
  if (item) setImage(item.getAsFile());
});

// ---- drawing ---------------------------------------------------------------------------------------------------
function redraw() {
  if (!state.pixels) return;
  const { width: w, height: h } = state.pixels;
  const out = new ImageData(new Uint8ClampedArray(state.pixels.data), w, h);
  const a = Number($('opacity').value) / 100;
  for (const m of state.masks) {
    if (!m.visible) continue;
    // Hovering a mask shows it strongly and the others faintly.
    const alpha = state.hover === null ? a : state.hover === m.id ? Math.max(a, 0.75) : a * 0.3;
    const [r, g, b] = m.colour;
    const d = out.data;
    for (let p = 0; p < w * h; p++) {
      if (!m.data[p]) continue;
      d[p * 4] = Math.trunc(d[p * 4] * (1 - alpha) + r * alpha);
      d[p * 4 + 1] = Math.trunc(d[p * 4 + 1] * (1 - alpha) + g * alpha);
      d[p * 4 + 2] = Math.trunc(d[p * 4 + 2] * (1 - alpha) + b * alpha);
    }
  }
  view.getContext('2d').putImageData(out, 0, 0);
  drawPrompts();
}
$('opacity').addEventListener('input', redraw);

function drawPrompts(drag) {
  const ctx = prompts.getContext('2d');
  ctx.clearRect(0, 0, prompts.width, prompts.height);
  const s = Math.max(prompts.width, prompts.height) / 100;
  for (const p of state.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, s, 0, 2 * Math.PI);
    ctx.fillStyle = p.label ? '#00e060' : '#ff3030';
    ctx.fill();
    ctx.lineWidth = s / 3;
    ctx.strokeStyle = '#fff';
    ctx.stroke();
  }
  const b = drag ?? state.box;
  if (b) {
    ctx.lineWidth = s / 2;
    ctx.strokeStyle = '#00a0ff';
    ctx.strokeRect(Math.min(b.x1, b.x2), Math.min(b.y1, b.y2), Math.abs(b.x2 - b.x1), Math.abs(b.y2 - b.y1));
  }
}

// ---- SAM prompts: click points, drag a box -------------------------------------------------------------------
function imageXY(e) {
  const r = prompts.getBoundingClientRect();
  const x = ((e.clientX - r.left) / r.width) * prompts.width;
  const y = ((e.clientY - r.top) / r.height) * prompts.height;
  return { x: Math.min(Math.max(x, 0), prompts.width - 1), y: Math.min(Math.max(y, 0), prompts.height - 1) };
}
for (const btn of document.querySelectorAll('.mode'))
  btn.addEventListener('click', () => {
    state.mode = btn.dataset.mode;
    document.querySelectorAll('.mode').forEach((b) => b.classList.toggle('active', b === btn));
  });
function clearPrompts() {
  state.points = [];
  state.box = null;
  drawPrompts();
}
$('clear-prompts').addEventListener('click', clearPrompts);
let dragStart = null;
prompts.addEventListener('pointerdown', (e) => {
  if (state.mode === 'box') {
    dragStart = imageXY(e);
    prompts.setPointerCapture(e.pointerId);
  }
});
prompts.addEventListener('pointermove', (e) => {
  if (dragStart) {
    const p = imageXY(e);
    drawPrompts({ x1: dragStart.x, y1: dragStart.y, x2: p.x, y2: p.y });
  }
});
prompts.addEventListener('pointerup', (e) => {
  const p = imageXY(e);
  if (state.mode === 'point') {
    state.points.push({ x: Math.round(p.x), y: Math.round(p.y), label: e.shiftKey ? 0 : 1 });
  } else if (state.mode === 'box' && dragStart) {
    const b = {
      x1: Math.min(dragStart.x, p.x),
      y1: Math.min(dragStart.y, p.y),
      x2: Math.max(dragStart.x, p.x),
      y2: Math.max(dragStart.y, p.y),
    };
    state.box = b.x2 - b.x1 >= 2 && b.y2 - b.y1 >= 2 ? b : null;
    dragStart = null;
  }
  drawPrompts();
});

// ---- conversation ----------------------------------------------------------------------------------------------
function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text;
  $('log').append(div);
  $('log').scrollTop = $('log').scrollHeight;
  return div;
}

/** The answer with each [SEG] and the phrase before it (back to the last punctuation) in its mask's colour. */
function renderAnswer(div, text, masks) {
  div.textContent = '';
  const parts = text.split('[SEG]');
  parts.forEach((part, i) => {
    const m = i < parts.length - 1 ? masks.find((x) => x.segIndex === i) : null;
    if (!m) return div.append(part + (i < parts.length - 1 ? '[SEG]' : ''));
    const cut = Math.max(...[...'.,;:!?\n'].map((c) => part.lastIndexOf(c))) + 1;
    div.append(part.slice(0, cut));
    const span = document.createElement('span');
    span.className = 'seg';
    span.dataset.mask = String(m.id);
    span.style.background = `rgba(${m.colour.join(',')},0.45)`;
    span.textContent = part.slice(cut) + '[SEG]';
    span.addEventListener('mouseenter', () => setHover(m.id));
    span.addEventListener('mouseleave', () => setHover(null));
    div.append(span);
  });
}

function newChat() {
  state.history = [];
  state.masks = [];
  $('log').textContent = '';
  renderMasks();
  redraw();
}
$('new-chat').addEventListener('click', newChat);

/** Server-sent events from a fetch body: calls onData with each event's parsed data. */
async function readEvents(res, onData) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      if (data && data !== '[DONE]') onData(event, JSON.parse(data));
    }
  }
}

function decodePng(b64) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, img.width, img.height).data;
      const out = new Uint8Array(img.width * img.height);
      for (let p = 0; p < out.length; p++) out[p] = d[p * 4] > 127 ? 1 : 0;
      resolve(out);
    };
    img.onerror = () => reject(new Error('cannot decode a mask'));
    img.src = `data:image/png;base64,${b64}`;
  });
}

let maskIds = 0;
async function addMasks(list, turn) {
  const added = [];
  for (const m of list) {
    const colour = COLOURS[state.masks.length % COLOURS.length];
    const mask = {
      id: maskIds++,
      turn,
      index: m.index,
      segIndex: m.seg_index,
      colour,
      data: await decodePng(m.png),
      rle: m.rle,
      bbox: m.bbox,
      area: m.area,
      score: m.score,
      png: m.png,
      visible: true,
    };
    state.masks.push(mask);
    added.push(mask);
  }
  renderMasks();
  redraw();
  return added;
}

async function ask(question) {
  if (!state.imageId) return addMessage('error', state.pixels ? 'the image is still being encoded' : 'give an image first');
  const visual = { ...(state.points.length ? { points: state.points } : {}), ...(state.box ? { box: state.box } : {}) };
  state.busy = true;
  $('send').disabled = true;
  const turn = state.history.length;
  try {
    if (!question.trim()) {
      if (!visual.points && !visual.box) return addMessage('error', 'ask a question, or place points or a box');
      addMessage('user', '(SAM prompts)');
      const r = await (
        await api('/v1/segment', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ image_id: state.imageId, ...visual, mask_format: 'png' }),
        })
      ).json();
      await addMasks(r.masks, turn);
      status(`SAM: ${r.masks.length} mask in ${Math.round(r.timings.total_ms)} ms`);
      return;
    }
    addMessage('user', question);
    const div = addMessage('assistant', '');
    div.classList.add('streaming');
    const body = {
      messages: [
        ...state.history.flatMap((t) => [
          { role: 'user', content: t.question },
          { role: 'assistant', content: t.answer },
        ]),
        { role: 'user', content: question },
      ],
      image_id: state.imageId,
      stream: true,
      mask_format: 'png',
      ...visual,
    };
    const t0 = performance.now();
    const res = await api('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    let text = '';
    let masks = [];
    await readEvents(res, (event, d) => {
      if (event === 'error' || d.error) throw new Error(d.error?.message ?? 'stream error');
      const delta = d.choices?.[0]?.delta ?? {};
      if (delta.content) {
        text += delta.content;
        div.textContent = text;
      }
      if (delta.masks) masks = delta.masks;
    });
    div.classList.remove('streaming');
    state.history.push({ question, answer: text });
    renderAnswer(div, text, await addMasks(masks, turn));
    status(`${masks.length} mask(s) in ${Math.round(performance.now() - t0)} ms`);
  } catch (e) {
    addMessage('error', e.message);
  } finally {
    state.busy = false;
    $('send').disabled = false;
  }
}
$('ask').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!state.busy) ask($('question').value);
});
$('question').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    $('ask').requestSubmit();
  }
});

// ---- mask list: toggle, hover, download ------------------------------------------------------------------------
function setHover(id) {
  state.hover = id;
  document.querySelectorAll('#masks li').forEach((li) => li.classList.toggle('hover', Number(li.dataset.mask) === id));
  redraw();
}

function download(name, href) {
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

function renderMasks() {
  const ul = $('masks');
  ul.textContent = '';
  $('masks-head').hidden = state.masks.length === 0;
  for (const m of state.masks) {
    const li = document.createElement('li');
    li.dataset.mask = String(m.id);
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = `rgb(${m.colour.join(',')})`;
    const toggle = document.createElement('input');
    toggle.type = 'checkbox';
    toggle.checked = m.visible;
    toggle.title = 'show';
    toggle.addEventListener('change', () => {
      m.visible = toggle.checked;
      redraw();
    });
    const label = document.createElement('span');
    label.textContent = `turn ${m.turn + 1}, mask ${m.index + 1}: ${m.area} px, score ${m.score.toFixed(2)}`;
    const dl = document.createElement('button');
    dl.textContent = 'PNG';
    dl.className = 'download-png';
    dl.addEventListener('click', () => download(`mask_${m.turn + 1}_${m.index + 1}.png`, `data:image/png;base64,${m.png}`));
    li.append(toggle, sw, label, dl);
    li.addEventListener('mouseenter', () => setHover(m.id));
    li.addEventListener('mouseleave', () => setHover(null));
    ul.append(li);
  }
}

$('download-rle').addEventListener('click', () => {
  const coco = state.masks.map((m) => ({
    id: m.id + 1,
    turn: m.turn,
    seg_index: m.segIndex,
    segmentation: m.rle,
    bbox: m.bbox,
    area: m.area,
    score: m.score,
  }));
  download('masks.json', URL.createObjectURL(new Blob([JSON.stringify(coco)], { type: 'application/json' })));
});

// ---- examples, model name, API key -----------------------------------------------------------------------------
$('api-key').addEventListener('change', () => localStorage.setItem('lisa-api-key', $('api-key').value));
fetch('/healthz')
  .then(async (r) => ($('model').textContent = `model: ${(await r.json()).model}`))
  .catch(() => {});
fetch('/assets/examples/examples.json')
  .then((r) => r.json())
  .then((list) => {
    for (const ex of list) {
      const b = document.createElement('button');
      const img = document.createElement('img');
      img.src = `/assets/examples/${ex.file}`;
      img.alt = '';
      const t = document.createElement('span');
      t.textContent = ex.question;
      b.append(img, t);
      b.addEventListener('click', async () => {
        await setImage(await (await fetch(img.src)).blob());
        $('question').value = ex.question;
      });
      $('examples').append(b);
    }
  })
  .catch(() => {});
