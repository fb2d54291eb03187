// pibridge workspace guard, loaded into pi with `--no-extensions --extension <this file>`.
//
// pi's file tools (read, write, edit, ls, grep, find, and any tool taking a
// `path`) may only touch paths inside the workspace. A path is resolved the
// way pi resolves it (leading "@" dropped, "~" expanded, relative to the
// session cwd, ".." folded), then every symlink in its existing part is
// followed; the call is blocked, with a reason the model sees, when the result
// leaves the workspace or enters a directory pibridge hides (its state dir and
// the secrets dir). bash is not checked here: it runs inside the sandbox.
// Known limit: a symlink planted by an earlier bash step is followed at check
// time, so it is caught; only a change between check and use is not.

import { realpathSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const UNICODE_SPACES = /[\u00A0\u2000-\u200A\u202F\u205F\u3000]/g;

function expand(filePath) {
	let expanded = filePath.startsWith("@") ? filePath.slice(1) : filePath;
	expanded = expanded.replace(UNICODE_SPACES, " ");
	if (expanded === "~") return os.homedir();
	if (expanded.startsWith("~/")) return os.homedir() + expanded.slice(1);
	return expanded;
}

// The real location of a path that may not exist yet: the deepest existing
// ancestor with its symlinks resolved, plus the rest of the path.
function physical(target) {
	let existing = target;
	const rest = [];
	for (;;) {
		try {
			return path.join(realpathSync(existing), ...rest.reverse());
		} catch {
			const parent = path.dirname(existing);
			if (parent === existing) return target;
			rest.push(path.basename(existing));
			existing = parent;
		}
	}
}

// pi's read tool also tries these spellings of a missing file name.
function spellings(resolved) {
	const amPm = resolved.replace(/ (AM|PM)\./gi, "\u202F$1.");
	const nfd = resolved.normalize("NFD");
	const curly = resolved.replace(/'/g, "\u2019");
	return [...new Set([resolved, amPm, nfd, curly, nfd.replace(/'/g, "\u2019")])];
}

function inside(candidate, root) {
	const relative = path.relative(root, candidate);
	return relative === "" || (!relative.startsWith("..") && !path.isAbsolute(relative));
}

function hiddenRoots() {
	try {
		const parsed = JSON.parse(process.env.PIBRIDGE_HIDDEN_PATHS || "[]");
		return Array.isArray(parsed) ? parsed.map((entry) => physical(path.resolve(String(entry)))) : [];
	} catch {
		return [];
	}
}

// In pi's default parallel mode every call of an assistant message is checked
// before any of them runs, so a bash call beside a file tool could plant a
// symlink between the check and the use. Such file calls are refused; the
// model can make them again in the next step, after bash has run.
function bashInSameStep(ctx, toolCallId) {
	try {
		const entry = ctx.sessionManager.getLeafEntry();
		const message = entry && entry.type === "message" ? entry.message : undefined;
		if (!message || message.role !== "assistant" || !Array.isArray(message.content)) return false;
		return message.content.some(
			(part) => part.type === "toolCall" && part.name === "bash" && part.id !== toolCallId,
		);
	} catch {
		return false;
	}
}

export default function workspaceGuard(pi) {
	pi.on("tool_call", (event, ctx) => {
		if (event.toolName === "bash") return undefined;
		const input = event.input || {};
		const cwd = (ctx && ctx.cwd) || process.cwd();
		const workspace = physical(path.resolve(process.env.PIBRIDGE_WORKSPACE || cwd));
		// A hidden dir that holds the workspace (a workspace kept under the state
		// dir) hides only what lies outside the workspace, which is refused anyway.
		const hidden = hiddenRoots().filter((root) => !inside(workspace, root));
		if (bashInSameStep(ctx, event.toolCallId)) {
			return {
				block: true,
				reason:
					`pibridge workspace guard: ${event.toolName} cannot run in the same step as bash ` +
					"(bash could change what its path points to). Call it again on its own.",
			};
		}
		const raw = typeof input.path === "string" && input.path !== "" ? input.path : ".";
		const resolved = path.resolve(cwd, expand(raw));
		for (const spelling of spellings(resolved)) {
			const real = physical(spelling);
			if (!inside(real, workspace)) {
				return {
					block: true,
					reason:
						`pibridge workspace guard: ${event.toolName} of ${JSON.stringify(raw)} is not allowed: ` +
						`it resolves outside the workspace (${workspace}). ` +
						"File tools may only use paths inside the workspace.",
				};
			}
			if (hidden.some((root) => inside(real, root))) {
				return {
					block: true,
					reason:
						`pibridge workspace guard: ${event.toolName} of ${JSON.stringify(raw)} is not allowed: ` +
						"that directory is reserved for the server.",
				};
			}
		}
		return undefined;
	});
}
