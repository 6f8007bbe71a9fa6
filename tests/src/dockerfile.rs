//! A Dockerfile read as far as the image tests need: its stages, their instructions, and what
//! each target image promises (entrypoint, arguments, user, ports, copied files).

use anyhow::{Context, bail};

/// One stage of a Dockerfile: its name, the image or stage it is built `FROM`, and its
/// instructions (keyword in upper case, continuations joined).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stage {
    /// The name after `AS`, or "".
    pub name: String,
    /// The image or stage after `FROM`.
    pub from: String,
    /// `(KEYWORD, arguments)` in order.
    pub instructions: Vec<(String, String)>,
}

impl Stage {
    /// The arguments of every `keyword` instruction of this stage.
    pub fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The arguments of its last `keyword` instruction: the one in effect.
    pub fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }
}

/// The stages of a Dockerfile, comments and blank lines left out.
pub fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.is_empty()) {
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let name = match parts.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                _ => String::new(),
            };
            stages.push(Stage {
                name,
                from: parts.first().copied().unwrap_or_default().to_owned(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, rest.trim().to_owned()));
        }
    }
    stages
}

/// The stage named `name`.
pub fn stage<'a>(stages: &'a [Stage], name: &str) -> anyhow::Result<&'a Stage> {
    stages
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("the Dockerfile has no stage {name}"))
}

/// An instruction of `stage`, or the one it inherits from the stage it is built `FROM`.
pub fn inherited<'a>(stages: &'a [Stage], stage: &'a Stage, keyword: &str) -> Option<&'a str> {
    stage.last(keyword).or_else(|| {
        stages
            .iter()
            .find(|s| s.name == stage.from)
            .and_then(|parent| inherited(stages, parent, keyword))
    })
}

/// The image a stage is built on, through the stages it is built `FROM`.
pub fn base_image<'a>(stages: &'a [Stage], stage: &'a Stage) -> &'a str {
    match stages.iter().find(|s| s.name == stage.from) {
        Some(parent) => base_image(stages, parent),
        None => &stage.from,
    }
}

/// What one image promises: which binary it runs as which user, on which ports, with which
/// default arguments, and where it copies files to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The exec-form `ENTRYPOINT`'s one element.
    pub entrypoint: String,
    /// The exec-form `CMD`.
    pub args: Vec<String>,
    /// `USER uid:gid` (inherited), as numbers.
    pub user: (i64, i64),
    /// Every `EXPOSE`d port.
    pub ports: Vec<i32>,
    /// The destination of every `COPY`.
    pub copied: Vec<String>,
}

/// The image target stage `target` builds.
pub fn image(stages: &[Stage], target: &str) -> anyhow::Result<Image> {
    let stage = stage(stages, target)?;
    let user = inherited(stages, stage, "USER").context("no USER")?;
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let entrypoint = exec_form(stage.last("ENTRYPOINT").context("no ENTRYPOINT")?)?;
    let [entrypoint] = <[String; 1]>::try_from(entrypoint)
        .map_err(|e| anyhow::anyhow!("{target}: an ENTRYPOINT of one element, not {e:?}"))?;
    let ports = stage
        .all("EXPOSE")
        .iter()
        .flat_map(|p| p.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .with_context(|| format!("EXPOSE {p} is not a port"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Image {
        entrypoint,
        args: exec_form(stage.last("CMD").context("no CMD")?)?,
        user: (
            uid.parse()
                .with_context(|| format!("user {uid} is not numeric"))?,
            gid.parse()
                .with_context(|| format!("group {gid} is not numeric"))?,
        ),
        ports,
        copied: stage
            .all("COPY")
            .iter()
            .filter_map(|c| c.split_whitespace().last())
            .map(str::to_owned)
            .collect(),
    })
}

/// An exec-form (JSON list) argument.
fn exec_form(text: &str) -> anyhow::Result<Vec<String>> {
    if !text.starts_with('[') {
        bail!("not an exec-form list: {text}");
    }
    serde_json::from_str(text).with_context(|| format!("not an exec-form list: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = r#"
# syntax=docker/dockerfile:1
FROM rust:1 AS build
RUN cargo build --release \
    -p app
FROM gcr.io/distroless/cc:nonroot AS runtime
USER 65532:65532

FROM runtime AS app
COPY --from=build /src/target/release/app /usr/local/bin/app
EXPOSE 9249/tcp 8080
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["run", "--job", "/etc/job.json"]
"#;

    #[test]
    fn reads_stages_with_continuations_joined() {
        let stages = stages(DOCKERFILE);
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["build", "runtime", "app"]);
        assert_eq!(stages[0].from, "rust:1");
        assert_eq!(stages[0].all("RUN"), ["cargo build --release  -p app"]);
        assert_eq!(stages[2].from, "runtime");
    }

    #[test]
    fn an_image_inherits_its_user_and_base_through_its_stages() {
        let stages = stages(DOCKERFILE);
        let app = stage(&stages, "app").unwrap();
        assert_eq!(base_image(&stages, app), "gcr.io/distroless/cc:nonroot");
        assert_eq!(inherited(&stages, app, "USER"), Some("65532:65532"));
        assert_eq!(
            image(&stages, "app").unwrap(),
            Image {
                entrypoint: "/usr/local/bin/app".into(),
                args: vec!["run".into(), "--job".into(), "/etc/job.json".into()],
                user: (65532, 65532),
                ports: vec![9249, 8080],
                copied: vec!["/usr/local/bin/app".into()],
            }
        );
    }

    #[test]
    fn a_shell_form_entrypoint_or_a_missing_target_is_refused() {
        let stages = stages("FROM x AS a\nUSER 1\nENTRYPOINT /bin/app\nCMD [\"run\"]\n");
        let err = image(&stages, "a").unwrap_err().to_string();
        assert!(err.contains("not an exec-form list"), "{err}");
        let err = image(&stages, "b").unwrap_err().to_string();
        assert_eq!(err, "the Dockerfile has no stage b");
    }
}
