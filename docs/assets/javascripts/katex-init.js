// Render the math that pymdownx.arithmatex marks (generic mode) with the KaTeX copy served by this
// site: no CDN, so the docs read the same offline. Material's document$ re-runs it on page changes.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
  });
});
