// What the browser test checks on each page of the dashboard: a language, a name for every picture,
// a label for every control, links with text in the keyboard order, and WCAG AA contrast
// (4.5:1, 3:1 for large text) for every visible piece of text outside the graphs; returns the
// problems found. Run as a WebDriver script (a function body).
const problems = [];
if (!document.documentElement.lang) problems.push('the page has no lang');
for (const s of document.querySelectorAll('svg[role=img]')) {
  if (!s.getAttribute('aria-label') && !s.querySelector('title')) problems.push('a picture without a name');
}
for (const i of document.querySelectorAll('input, select, textarea, button')) {
  const named = (i.labels && i.labels.length) || i.getAttribute('aria-label') || (i.tagName === 'BUTTON' && i.textContent.trim());
  if (!named) problems.push('an unlabelled control: ' + i.outerHTML.slice(0, 80));
}
for (const a of document.querySelectorAll('a[href]')) {
  if (!a.textContent.trim() && !a.getAttribute('aria-label')) problems.push('a link without text');
  if (a.tabIndex < 0) problems.push('a link out of the keyboard order: ' + a.textContent.trim());
}
const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
const luminance = (c) => { const [r, g, b] = c.match(/[\d.]+/g).map(Number); return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b); };
const opaque = (c) => c && c !== 'transparent' && !/rgba\(.*,\s*0\)$/.test(c);
const background = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; if (opaque(c)) return c; } return 'rgb(255, 255, 255)'; };
for (const e of document.querySelectorAll('body *')) {
  if (e.closest('svg') || ![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const st = getComputedStyle(e);
  const r = e.getBoundingClientRect();
  if (st.visibility === 'hidden' || st.display === 'none' || r.width <= 1 || r.height <= 1) continue;
  const [a, b] = [luminance(st.color), luminance(background(e))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(st.fontSize);
  const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)} of "${e.textContent.trim().slice(0, 30)}" (${e.tagName.toLowerCase()}.${e.className})`);
}
return problems;
