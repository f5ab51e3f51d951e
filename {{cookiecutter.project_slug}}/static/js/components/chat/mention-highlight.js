// A mention of the person viewing stands out more than others'. The server marks it in
// pages it renders for them; bubbles that arrive live were rendered once for the whole
// room, so the page marks them.

export function markOwnMentions(bubble, userId) {
  if (!userId) return;
  const own = bubble.querySelectorAll(`.mention[data-mention-user-id="${CSS.escape(userId)}"]`);
  own.forEach((mention) => mention.classList.add("mention--me"));
  if (own.length) bubble.classList.add("bubble--mentions-me");
}
