with source as (
    select * from {{ source('raw', 'ingest_errors') }}
),

renamed as (
    select
        source_key,
        stage,
        reason,
        detail,
        quarantine_key,
        {{ raw_column("SOPInstanceUID") }} as sop_instance_uid,
        file_size,
        content_hash,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by source_key, stage order by ingested_at desc) = 1
)

select * from deduplicated
