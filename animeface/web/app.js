// The animeface page: identify pictures, teach faces, browse the gallery, all through /api/.
"use strict";

const TOKEN = document.querySelector('meta[name="animeface-token"]').content;
const IDENTIFY_AT_ONCE = 2;  // requests in flight; each picture shows as soon as it is done
const $ = (id) => document.getElementById(id);
const pending = [];
let running = 0;
let chosen = null;  // {picture, face, button} picked for teaching

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: {"X-Animeface-Token": TOKEN, ...(options.headers || {})}});
  const body = await response.json().catch(() => ({detail: response.statusText}));
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const percent = (value) => `${(value * 100).toFixed(1)}%`;

// -- pages --------------------------------------------------------------------

function showPage() {
  const page = (location.hash.slice(1) || "identify");
  document.body.dataset.page = ["identify", "teach", "gallery"].includes(page) ? page : "identify";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === document.body.dataset.page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (document.body.dataset.page === "gallery") loadGallery();
}

// -- identify -----------------------------------------------------------------

function addPictures(files) {
  for (const file of files) {
    const picture = {file, url: URL.createObjectURL(file), faces: null};
    picture.card = element("article", {className: "card"}, [element("p", {className: "status", textContent: "identifying…"})]);
    $("results").prepend(picture.card);
    pending.push(picture);
  }
  identifyNext();
}

function identifyNext() {
  while (running < IDENTIFY_AT_ONCE && pending.length) {
    const picture = pending.shift();
    running++;
    identify(picture).finally(() => { running--; identifyNext(); });
  }
}

async function identify(picture) {
  const form = new FormData();
  form.append("picture", picture.file);
  picture.explained = null;  // the gallery may have changed: maps are asked for again
  try {
    picture.faces = (await api("/api/identify", {method: "POST", body: form})).faces;
    render(picture);
  } catch (error) {
    picture.card.replaceChildren(element("h2", {textContent: picture.file.name}),
                                 element("p", {className: "status error", textContent: error.message}));
  }
}

function render(picture) {
  const image = element("img", {src: picture.url, alt: picture.file.name});
  const figure = element("figure", {}, [image]);
  const count = picture.faces.length;
  const summary = count ? `${count} face${count > 1 ? "s" : ""}` : "no face found";
  picture.card.replaceChildren(figure, element("h2", {textContent: `${picture.file.name} · ${summary}`}));
  image.addEventListener("load", () => {
    const [width, height] = [image.naturalWidth, image.naturalHeight];
    picture.faces.forEach((face, index) => figure.append(faceBox(picture, face, index, width, height)));
  }, {once: true});
}

function faceBox(picture, face, index, width, height) {
  const [x, y, w, h] = face.box;
  const name = face.label || "unknown";
  const guesses = face.candidates.map(([guess, p]) => element("li", {textContent: `${guess} ${Math.round(p * 100)}%`}));
  if (face.reason) guesses.push(element("li", {className: "why", textContent: face.reason}));
  if (!guesses.length) guesses.push(element("li", {className: "why", textContent: "no guesses"}));
  const button = element("button", {type: "button", className: `face ${face.label ? "known" : "unknown"}`},
                         [element("span", {className: "tag", textContent: face.label ? `${name} ${Math.round(face.score * 100)}%` : name}),
                          element("ol", {className: "guesses"}, guesses)]);
  Object.assign(button.style, {left: percent(x / width), top: percent(y / height), width: percent(w / width), height: percent(h / height)});
  if (face.candidates.length) {
    const showMap = () => showWhy(picture, index, button.querySelector(".guesses"));
    button.addEventListener("mouseenter", showMap, {once: true});
    button.addEventListener("focus", showMap, {once: true});
  }
  button.addEventListener("click", () => {
    if (document.body.dataset.page === "teach") {
      button.classList.remove("open");  // guesses opened in Identify would stay over the picture
      choose(picture, face, button);
    } else button.classList.toggle("open");
  });
  return button;
}

// What matched: the face's map for its best candidate, asked for once per picture, on the first hover.
async function showWhy(picture, index, guesses) {
  if (guesses.querySelector(".map")) return;
  const item = element("li", {className: "map", textContent: "finding what matched…"});
  guesses.append(item);
  try {
    if (!picture.explained) {
      const form = new FormData();
      form.append("picture", picture.file);
      picture.explained = api("/api/explain", {method: "POST", body: form});
    }
    const explanation = (await picture.explained).explanations.find((e) => e.face === index);
    if (!explanation) { item.remove(); return; }
    item.replaceChildren(element("img", {src: explanation.overlay, alt: `what matched ${explanation.candidate}`}),
                         element("span", {textContent: `What matched ${explanation.candidate}: red added, blue took away; ` +
                                                       `colour ${Math.round(explanation.colour_share * 100)}%`}));
  } catch (error) {
    picture.explained = null;
    item.className = "map why error";
    item.textContent = `no map: ${error.message}`;
  }
}

// -- teach ----------------------------------------------------------------------

function choose(picture, face, button) {
  document.querySelectorAll(".face.chosen").forEach((b) => b.classList.remove("chosen"));
  button.classList.add("chosen");
  chosen = {picture, face};
  const canvas = $("teach-face");
  const image = picture.card.querySelector("img");
  const [x, y, w, h] = face.box;
  canvas.getContext("2d").drawImage(image, x, y, w, h, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
  $("teach-hint").textContent = face.label ? `This face is ${face.label}; type another name to correct it.`
                                           : "Who is this? Type a name (known names are suggested).";
  $("teach-name").disabled = $("teach-submit").disabled = false;
  $("teach-name").value = face.label || "";
  $("teach-name").focus();
}

function say(text, isError = false, undo = null) {
  const status = $("teach-status");
  status.className = isError ? "error" : "";
  status.replaceChildren(text);
  if (undo) {
    const button = element("button", {type: "button", className: "link", textContent: "Undo"});
    button.addEventListener("click", undo, {once: true});
    status.append(" ", button);
  }
}

async function teach(event) {
  event.preventDefault();
  const name = $("teach-name").value.trim();
  if (!chosen || !name) return;
  const {picture, face} = chosen;
  const form = new FormData();
  form.append("picture", picture.file);
  form.append("name", name);
  if (!face.whole_picture) form.append("box", JSON.stringify(face.box));
  if (face.box_angle) form.append("angle", String(face.box_angle));
  $("teach-submit").disabled = true;
  try {
    const {entry, characters} = await api("/api/enroll", {method: "POST", body: form});
    say(`Taught ${entry.label} (${characters[entry.label]} face${characters[entry.label] > 1 ? "s" : ""} now).`, false,
        () => undo(entry, picture));
    updateNames(Object.keys(characters));
    await identify(picture);
  } catch (error) {
    say(error.message, true);
  } finally {
    $("teach-submit").disabled = false;
  }
}

async function undo(entry, picture) {
  try {
    const {characters} = await api("/api/unenroll", {method: "POST", headers: {"Content-Type": "application/json"},
                                                     body: JSON.stringify(entry)});
    say(`Undone: that face is no longer enrolled as ${entry.label}.`);
    updateNames(Object.keys(characters));
    await identify(picture);
  } catch (error) {
    say(error.message, true);
  }
}

function updateNames(names) {
  $("names").replaceChildren(...names.map((name) => element("option", {value: name})));
}

// -- gallery ----------------------------------------------------------------------

async function loadGallery() {
  const list = $("characters");
  try {
    const {characters} = await api("/api/characters");
    updateNames(characters.map((c) => c.name));
    if (!characters.length) {
      list.replaceChildren(element("p", {textContent: "The gallery is empty: teach a face to add a character."}));
      return;
    }
    list.replaceChildren(...characters.map(characterCard));
  } catch (error) {
    list.replaceChildren(element("p", {className: "error", textContent: error.message}));
  }
}

function characterCard({name, count, thumbnails}) {
  const forget = element("button", {type: "button", textContent: "Forget"});
  forget.addEventListener("click", async () => {
    if (!confirm(`Forget ${name} and all ${count} of its faces? This cannot be undone.`)) return;
    try {
      await api("/api/forget", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({name})});
    } catch (error) {
      alert(error.message);
    }
    loadGallery();
  });
  return element("article", {className: "character"}, [
    element("h2", {textContent: name}),
    element("p", {className: "count", textContent: `${count} face${count > 1 ? "s" : ""}`}),
    element("div", {className: "thumbs"}, thumbnails.map((src) => element("img", {src, alt: `a face of ${name}`}))),
    forget,
  ]);
}

// -- wiring -------------------------------------------------------------------------

const drop = $("drop");
$("files").addEventListener("change", (event) => { addPictures(event.target.files); event.target.value = ""; });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); addPictures(event.dataTransfer.files); });
$("teach").addEventListener("submit", teach);
window.addEventListener("hashchange", showPage);
showPage();
api("/api/characters").then(({characters}) => updateNames(characters.map((c) => c.name))).catch(() => {});
