//! `hostile-inputs DIR`: writes every hostile document of `doctune_testkit::hostile` into DIR,
//! and each hostile model folder into DIR/models/NAME, with what DocTune must make of each.

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: hostile-inputs DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir)?;
    for f in doctune_testkit::hostile::documents() {
        std::fs::write(dir.join(f.name), &f.bytes)?;
        println!("{}\t{} bytes\t{:?}", f.name, f.bytes.len(), f.expect);
    }
    for m in doctune_testkit::hostile::models() {
        let folder = dir.join("models").join(m.name);
        doctune_testkit::hub::write_folder(&folder, &m.files);
        let when = if m.at_import { "import" } else { "chat" };
        println!("models/{}\trefused at {when}: {}", m.name, m.error);
    }
    Ok(())
}
