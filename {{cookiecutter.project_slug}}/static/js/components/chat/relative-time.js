// Relative times in chat lists ("now", "5 min", "14:05", "Mon", "3 Mar"), the same
// labels the server renders (chat_time), kept current once a minute in the viewer's
// own time zone. Every <time data-chat-time datetime="..."> on the page takes part.
// Rooms use clockTime and dayLabel for their bubbles and date dividers.

const MINUTE_MS = 60 * 1000;
const HOUR_MS = 60 * MINUTE_MS;
const WEEK_MS = 7 * 24 * HOUR_MS;

export function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate());
}

// "14:05" in the viewer's time zone.
export function clockTime(date) {
  return date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
}

// A room's date divider: "Today", "Yesterday", "Sat 28 Nov" (with the year if not this one).
export function dayLabel(date, now = new Date()) {
  const days = Math.round((startOfDay(now) - startOfDay(date)) / (24 * HOUR_MS)); // DST days are 23 or 25 h
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  const options = { weekday: "short", day: "numeric", month: "short" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString("en-GB", options);
}

export function relativeTime(date, now = new Date()) {
  const age = now - date;
  if (age < MINUTE_MS) return "now";
  if (age < HOUR_MS) return `${Math.floor(age / MINUTE_MS)} min`;
  const day = startOfDay(date);
  const today = startOfDay(now);
  if (day.getTime() === today.getTime()) return clockTime(date);
  if (today - day < WEEK_MS) return date.toLocaleDateString("en-GB", { weekday: "short" });
  const options = { day: "numeric", month: "short" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString("en-GB", options);
}

export function refreshTimes(root = document) {
  const now = new Date();
  root.querySelectorAll("time[data-chat-time]").forEach((element) => {
    const date = new Date(element.dateTime);
    if (!Number.isNaN(date.getTime())) element.textContent = relativeTime(date, now);
  });
}

if (!window.chatRelativeTimes) {
  window.chatRelativeTimes = setInterval(refreshTimes, MINUTE_MS);
}
